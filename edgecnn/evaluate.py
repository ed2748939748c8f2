"""Accuracy and agreement of exported files on a held-out split: shared by export validation and ``edgecnn eval``.

Export validation and ``edgecnn eval`` must measure the same way, so both call :func:`measure`. Each task registers
how raw examples become model inputs, how outputs are scored against the truth, and how two sets of outputs are
compared; the runtime task classes do the inference, so what is measured is what users run.

Needs numpy and the runtime only; rebuilding a held-out split from the manifest needs the dataset's own packages
(scikit-learn for digits), and Keras as a reference needs TensorFlow — both optional.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from . import manifest as manifest_io
from .errors import EdgecnnError, ModelError
from .runtime import image as image_io
from .runtime.tasks import TASK_CLASSES, Task, runnable_formats

#: task -> fn(manifest, raw examples) -> model inputs
INPUT_BUILDERS: dict[str, Callable] = {}
#: task -> fn(manifest, outputs, targets) -> {"accuracy": ...} or {"map50": ..., "map": ...}
SCORERS: dict[str, Callable] = {}
#: task -> fn(outputs, reference outputs) -> {"agreement": ..., "max_abs_diff": ...}
COMPARERS: dict[str, Callable] = {}


def _image_inputs(manifest, images) -> np.ndarray:
    return image_io.pixels_to_input(np.asarray(images), manifest["preprocessing"])


def _accuracy(manifest, outputs, targets) -> dict:
    return {"accuracy": float(np.mean(outputs[0].argmax(axis=1) == np.asarray(targets)))}


def _compare_probabilities(outputs, reference) -> dict:
    return {"agreement": float(np.mean(outputs[0].argmax(axis=1) == reference[0].argmax(axis=1))),
            "max_abs_diff": float(np.max(np.abs(outputs[0] - reference[0])))}


INPUT_BUILDERS["image-classification"] = _image_inputs
SCORERS["image-classification"] = _accuracy
COMPARERS["image-classification"] = _compare_probabilities


def _text_inputs(manifest, texts) -> np.ndarray:
    from .runtime.tasks import load_tokenizer
    from .runtime.text import Tokenizer

    if isinstance(manifest, manifest_io.Manifest):
        return load_tokenizer(manifest).encode(list(texts))
    return Tokenizer.from_manifest_section(manifest["text"]).encode(list(texts))


INPUT_BUILDERS["text-classification"] = _text_inputs
SCORERS["text-classification"] = _accuracy
COMPARERS["text-classification"] = _compare_probabilities


def _detection_map(manifest, outputs, targets) -> dict:
    """mAP@0.5 and mAP@[.5:.95] by pycocotools (train extra) after the runtime's own decoding."""
    from .train.detection_metrics import score_outputs

    return score_outputs(manifest, outputs, targets)


def _compare_detections(outputs, reference) -> dict:
    from .train.detection_metrics import compare_outputs

    return compare_outputs(outputs, reference)


INPUT_BUILDERS["object-detection"] = _image_inputs
SCORERS["object-detection"] = _detection_map
COMPARERS["object-detection"] = _compare_detections


def run_batched(task: Task, inputs: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
    """All outputs of ``task`` for ``inputs``, run ``batch_size`` at a time and concatenated per output."""
    chunks = [task.outputs(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


def measure(manifest: manifest_io.Manifest, fmt: str, inputs: np.ndarray, targets,
            reference: list[np.ndarray] | None, threads: int | None = None) -> dict:
    """Score one format on the held-out inputs, and compare its outputs with ``reference`` when given."""
    task = TASK_CLASSES[manifest.task](manifest, format=fmt, threads=threads)
    outputs = run_batched(task, inputs)
    result = SCORERS[manifest.task](manifest, outputs, targets)
    if reference is not None:
        result.update(COMPARERS[manifest.task](outputs, reference))
    return result


def heldout(manifest: manifest_io.Manifest):
    """(model inputs, targets) of the held-out split the manifest names, rebuilt from its dataset and seed."""
    from .train.datasets import load_dataset

    dataset = manifest.get("dataset") or {}
    if not dataset.get("name"):
        raise ModelError(f"{manifest.folder}/{manifest_io.MANIFEST_NAME} names no dataset to evaluate on")
    splits = load_dataset(dataset["name"], seed=dataset.get("seed", 0), **dataset.get("options", {}))
    x, y = splits.split(dataset.get("split", "test"))
    return INPUT_BUILDERS[manifest.task](manifest, x), y


def keras_reference(manifest: manifest_io.Manifest, inputs: np.ndarray) -> list[np.ndarray] | None:
    """Outputs of the source Keras model, when TensorFlow is installed and the manifest's source file is here."""
    source = (manifest.get("source") or {}).get("model")
    if not source or not Path(source).is_file():
        return None
    try:
        import keras  # noqa: F401  (optional: only to tell whether the training stack is installed)
    except ImportError:
        return None
    if manifest_io.sha256_of(source) != manifest["source"].get("sha256"):
        return None
    from .keras_io import keras_outputs, load_keras_model

    return keras_outputs(load_keras_model(source), manifest, inputs)


def evaluate(model_dir: str | os.PathLike, formats: list[str] | None = None, threads: int | None = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """The ``edgecnn eval`` report: the task metric and agreement with the reference, per format."""
    manifest = manifest_io.read(model_dir)
    inputs, targets = heldout(manifest)
    available = runnable_formats(manifest)
    formats = formats or manifest.formats
    reference, reference_name = keras_reference(manifest, inputs), "keras"
    if reference is None:
        reference_name = "onnx" if "onnx" in available else next(iter(available), None)
        reference = run_batched(TASK_CLASSES[manifest.task](manifest, format=reference_name, threads=threads),
                                inputs) if reference_name else None
    results = {}
    for fmt in formats:
        if progress:
            progress(fmt)
        try:
            results[fmt] = measure(manifest, fmt, inputs, targets, reference, threads)
        except EdgecnnError as exc:
            results[fmt] = {"error": str(exc)}
    dataset = manifest.get("dataset", {})
    report = {"model": str(manifest.folder), "task": manifest.task, "dataset": dataset.get("name"),
              "split": dataset.get("split", "test"), "n": len(targets), "reference": reference_name,
              "results": results}
    if manifest.task == "text-classification":
        from .train.text_reference import reference_report

        report.update(reference_report(manifest))
    return report
