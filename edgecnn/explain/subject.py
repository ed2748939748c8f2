"""What is being explained: the export (or a run's ``model.keras``, exported on the fly), its inputs, and which of
the optional tools are here.

An export folder is explained from its fp32 ONNX file, always present; the ``.keras`` it was made from is used
only for what needs gradients (Grad-CAM), and only when it is here and is that very file (same sha256). A run's
``model.keras`` is first exported to ONNX in a temporary folder by the export wing itself, so both ways in end up
on one code path and show what the device would run.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import manifest as manifest_io
from ..errors import InputError, ModelError
from ..runtime import image as image_io
from ..runtime.tasks import TASK_CLASSES, Task

#: What the train extra brings, per optional package, for the "what this install cannot show" notes.
TRAIN_EXTRA = "pip install 'edgecnn[train]'"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it (TensorFlow costs seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Item:
    """One input to explain: its name, what it is (uint8 pixels at the model's size, or the text), the model input
    (a batch of one) and, for images, the original size."""

    name: str
    raw: object
    x: np.ndarray
    size: tuple[int, int] | None = None
    #: A short name for figure titles: the file name, or the start of the text.
    title: str = ""


@dataclass
class Subject:
    manifest: manifest_io.Manifest
    onnx_path: Path
    task: Task
    items: list[Item]
    keras_path: Path | None = None
    #: Why there is no Keras model (and how to get one), when there is none.
    keras_note: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The export's name, or the run folder's for a ``model.keras``."""
        if self.keras_path is not None and self.manifest.folder.name == "model":
            return self.keras_path.resolve().parent.name
        return self.manifest.get("name") or self.manifest.folder.name

    @property
    def kind(self) -> str:
        return self.manifest.task

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def batch(self) -> np.ndarray:
        return np.concatenate([item.x for item in self.items])

    @property
    def preprocessing(self) -> dict:
        return self.manifest["preprocessing"]

    def keras_model(self):
        """The source Keras model (loaded once), or None."""
        if self.keras_path is None:
            return None
        if not hasattr(self, "_keras"):
            from ..keras_io import load_keras_model

            self._keras = load_keras_model(self.keras_path)
        return self._keras


def open_subject(model: str | os.PathLike, staging: Path, images=(), texts=(),
                 progress: Callable[[str], None] | None = None) -> Subject:
    """The export (or ``model.keras``, exported into ``staging``) and its inputs, ready to explain."""
    path = Path(model)
    keras_path, keras_note = None, ""
    if path.suffix == ".keras" and path.is_file():
        from ..export import export_model

        if progress:
            progress(f"exporting {path} to ONNX (the graph that is explained)")
        export_model(path, staging / "model", formats=["onnx"], progress=progress)
        manifest = manifest_io.read(staging / "model")
        keras_path = path
    elif path.is_file():
        raise InputError(f"{path} is neither an export folder nor a .keras file; pass an export folder (e.g. "
                         "exported/digits-cnn) or a run's model.keras")
    else:
        manifest = manifest_io.read(path)
        keras_path, keras_note = _source_keras(manifest)
    if "onnx" not in manifest.get("files", {}):
        raise ModelError(f"{manifest.folder} has no fp32 ONNX file, which explain reads; re-export it with the "
                         "onnx format (edgecnn export MODEL.keras --out DIR)")
    onnx_path = manifest.verify_file("onnx")
    task = TASK_CLASSES[manifest.task](manifest, format="onnx")
    items = _items(manifest, task, list(images), list(texts))
    return Subject(manifest, onnx_path, task, items, keras_path, keras_note)


def _source_keras(manifest: manifest_io.Manifest) -> tuple[Path | None, str]:
    """The ``.keras`` this export was made from when it is here, unchanged, and TensorFlow can load it; else why not."""
    source = (manifest.get("source") or {}).get("model")
    if not source:
        return None, "the manifest names no source .keras file"
    candidates = [Path(source)]
    if not Path(source).is_absolute():  # recorded relative to where export ran, usually the repository root
        candidates.append(manifest.folder.resolve().parent.parent / source)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        return None, (f"{source}, the .keras this export was made from, is not here (runs/ is not committed); "
                      f"train it again, or run explain on a run's model.keras")
    if manifest_io.sha256_of(found) != manifest["source"].get("sha256"):
        return None, f"{found} is not the file this export was made from (its sha256 differs); re-export it"
    if not installed("tensorflow"):
        return None, f"loading {found} needs TensorFlow: {TRAIN_EXTRA}"
    return found, ""


def _items(manifest: manifest_io.Manifest, task: Task, images: list, texts: list) -> list[Item]:
    """The inputs to explain; without any, the export's first sample (samples/ ships with every export)."""
    if manifest.task == "text-classification":
        from ..runtime.text import read_text_inputs

        if not images and not texts:
            images = _first_samples(manifest, ".txt")
        pairs = read_text_inputs(inputs=images, texts=texts)
        items = []
        for name, text in pairs:
            if not isinstance(text, str):
                name, text = text.path, text.read()
            items.append(Item(name or _short(text), text, task.preprocess([text]),
                              title=Path(name).name if name else _short(text, 32)))
        return items
    if texts:
        raise InputError(f"--text is for text models; {manifest.folder} is a {manifest.task} model: pass image files")
    if not images:
        images = _first_samples(manifest, ".png")
    prep = manifest["preprocessing"]
    items = []
    for source in images:
        pixels, size = image_io.load_pixels(source, prep)
        items.append(Item(str(source), pixels, image_io.pixels_to_input(pixels[None], prep), size,
                          title=Path(str(source)).name))
    return items


def _first_samples(manifest: manifest_io.Manifest, suffix: str) -> list[str]:
    folder = manifest.folder / (manifest.get("samples") or {}).get("folder", "samples")
    found = sorted(p for p in folder.glob(f"*{suffix}")) if folder.is_dir() else []
    if not found:
        raise InputError(f"no input given and {folder} holds no {suffix} sample; pass an input to explain")
    return [str(found[0])]


def _short(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"
