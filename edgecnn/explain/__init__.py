"""The explain wing: what a trained CNN does with your input, as one HTML page - the seed's lessons on your model.

``explain_model`` is the one public function; each section lives in its own module (``architecture``, ``maps``,
``attribution``, ``augmentation``, ``predictions``) and ``page`` lays them out. Everything is read from the export's
fp32 ONNX file, which every export has; only Grad-CAM (gradients) and the augmentation grid (the training pipeline)
need TensorFlow, and Grad-CAM also the ``.keras`` the export was made from. What this install cannot show is said
on the page in one line per part, with the extra that would add it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..folders import make_staging, swap_in
from .subject import TRAIN_EXTRA, Subject, installed, open_subject

REPORT_FILE = "explain.json"
PAGE_FILE = "index.html"


def explain_model(model: str | os.PathLike, out: str | os.PathLike, images=(), texts=(), channels: int = 8,
                  classes=(), progress: Callable[[str], None] | None = None) -> dict:
    """Write ``out/index.html``, its figures (PNG) and ``out/explain.json`` explaining ``model``; returns the report.

    Args:
        model: an export folder (explained from its fp32 ONNX file; its source ``.keras`` is used for Grad-CAM when
            it is here) or a run's ``model.keras`` (exported to ONNX in a temporary folder first).
        out: the folder to write; replaced whole (built beside it, then swapped in). It may be new, empty or an
            earlier explain output, nothing else.
        images: image files to explain (or text files, for a text model); default: the export's first sample.
        texts: texts to explain (text models).
        channels: feature-map channels shown per convolution block.
        classes: labels to explain besides each input's top class (Grad-CAM, occlusion, word highlights).

    Example::

        explain_model("exported/digits-cnn", "explain", images=["exported/digits-cnn/samples/3-1.png"])
    """
    say = progress or (lambda message: None)
    out = Path(out)
    _check_target(out)
    if channels < 1:
        raise InputError(f"--channels {channels}: show at least 1 channel per block")
    started = time.perf_counter()
    staging = make_staging(out)
    try:
        with tempfile.TemporaryDirectory(prefix="edgecnn-explain-") as scratch:
            subject = open_subject(model, Path(scratch), images=images, texts=texts, progress=say)
            report = _write(subject, staging, channels, _class_indices(subject, classes), say)
            report["model"] = str(model)
        report["seconds"] = round(time.perf_counter() - started, 2)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _check_target(out: Path) -> None:
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise InputError(f"--out {out} is a file; choose a folder name for the report")
    if (out / REPORT_FILE).is_file() or not any(out.iterdir()):
        return
    raise InputError(f"--out {out} is a folder with other things in it and no {REPORT_FILE}; the report replaces "
                     "the whole folder, so choose a new or empty one")


def _class_indices(subject: Subject, classes) -> list[int]:
    labels = subject.labels
    indices = []
    for label in classes:
        if label not in labels:
            raise InputError(f"--class {label!r} is not a label of this model; it has: {', '.join(labels)}")
        indices.append(labels.index(label))
    return indices


def _write(subject: Subject, out: Path, channels: int, classes: list[int], say) -> dict:
    from .architecture import explain_architecture
    from .attribution import explain_attention
    from .augmentation import explain_augmentation
    from .maps import explain_activations, explain_feature_maps
    from .page import render
    from .predictions import explain_decision, explain_predictions

    graph = tensors = None
    notes = []
    if installed("onnx"):
        from .graph import Graph

        graph = Graph(subject.onnx_path, subject.manifest["input"]["name"])
        tensors = graph.tensors(subject.batch)
    missing = [what for module, what in (("onnx", "layer shapes, parameters, filters, feature maps and logits"),
                                         ("matplotlib", "every figure"),
                                         ("tensorflow", "Grad-CAM (with the .keras) and the augmentation grid"))
               if not installed(module)]
    if missing:
        notes.append(f"This install has the runtime only; {TRAIN_EXTRA} adds: {'; '.join(missing)}.")
    steps = [
        ("architecture", lambda: explain_architecture(subject, graph, graph.tensors(subject.items[0].x)
                                                      if graph is not None else None, out)),
        ("filters and feature maps", lambda: explain_feature_maps(subject, graph, tensors, out, channels)),
        ("activations and pooling", lambda: explain_activations(subject, graph, tensors, out)),
        ("decision", lambda: explain_decision(subject, graph, tensors, out)),
        ("where the model looks", lambda: explain_attention(subject, out, classes)),
        ("augmentation", lambda: explain_augmentation(subject, out)),
        ("predictions", lambda: explain_predictions(subject, graph, out)),
    ]
    sections = []
    for title, build in steps:
        say(title)
        began = time.perf_counter()
        section = build()
        section.seconds = round(time.perf_counter() - began, 2)
        sections.append(section)
    manifest = subject.manifest
    name = subject.name
    source = "the fp32 ONNX file" + (f" and {subject.keras_path}" if subject.keras_path else "")
    summary = [(f"{manifest.task} model '{name}', {len(subject.labels)} classes; explained from {source} on "
                f"{platform.machine()} ({os.cpu_count()} CPUs). Inputs: {', '.join(i.name for i in subject.items)}.")]
    render(f"Inside {name}", summary, sections, notes, out / PAGE_FILE)
    return {"model": str(manifest.folder), "task": manifest.task, "labels": subject.labels,
            "inputs": [item.name for item in subject.items], "keras": str(subject.keras_path or "") or None,
            "keras_note": subject.keras_note or None, "notes": notes,
            # What the user should hear about on the command line: the install's gaps and a missing Grad-CAM.
            "unavailable": notes + [line for s in sections for line in s.missing if line.startswith("Grad-CAM")],
            "sections": {s.key: {"title": s.title, "data": s.data, "figures": s.figures, "missing": s.missing,
                                 "seconds": s.seconds} for s in sections}}


__all__ = ["explain_model"]
