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
    """Model inputs of pixels at the model's size (an N x H x W x C array), or of a list of images of any size,
    framed by the trainer's own :func:`~edgecnn.train.datasets.model_pixels` (the runtime's ``load_pixels``, as
    ``classify`` would; a gray dataset repeated for an RGB input): what was trained on is what is measured."""
    from .train.datasets import model_pixels

    prep = manifest["preprocessing"]
    return image_io.pixels_to_input(model_pixels(images, prep), prep)


#: Two scores of the reference closer than this are a tie (the export's fp32 ``max_diff`` default): a file that
#: picks either of two tied classes agrees with it. Random-weight models tie on every class, and counting those
#: as disagreements refused an EfficientNet int8 file at 96.9 % agreement whose largest difference was 4.5e-8.
TIE_TOLERANCE = 1e-4


def _accuracy(manifest, outputs, targets) -> dict:
    from .runtime.tasks import is_multi_label

    result = {}
    targets = np.asarray(targets)
    if targets.ndim == 1:
        result["accuracy"] = float(np.mean(outputs[0].argmax(axis=1) == targets))
    if is_multi_label(manifest):
        result.update(multi_label_scores(manifest, outputs[0], targets))
    return result


def multi_label_scores(manifest, scores: np.ndarray, targets: np.ndarray) -> dict:
    """Per-label F1 at the head's threshold (``f1:LABEL``), their mean (``f1``) and mAP (mean average precision
    over the labels that have positives). ``targets``: class indices (one label per example) or an N x labels
    0/1 matrix."""
    labels = list(manifest["labels"])
    truth = targets.astype(bool) if targets.ndim == 2 else np.eye(len(labels), dtype=bool)[targets.astype(int)]
    predicted = scores >= float(manifest["outputs"][0].get("threshold", 0.5))
    result, f1s, aps = {}, [], []
    for j, label in enumerate(labels):
        tp = int(np.sum(predicted[:, j] & truth[:, j]))
        denominator = int(predicted[:, j].sum() + truth[:, j].sum())
        f1 = 2 * tp / denominator if denominator else 0.0  # as scikit-learn (zero_division=0)
        result[f"f1:{label}"] = f1
        f1s.append(f1)
        if truth[:, j].any():
            aps.append(_average_precision(scores[:, j], truth[:, j]))
    result["f1"] = float(np.mean(f1s))
    result["map"] = float(np.mean(aps)) if aps else None
    return result


def _average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the precision at the rank of each positive, ranked by descending score (sklearn's definition)."""
    order = np.argsort(-scores, kind="stable")
    hits = truth[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def top1_agreement(outputs: np.ndarray, reference: np.ndarray, tolerance: float = TIE_TOLERANCE) -> float:
    """Share of rows where the output's top class is the reference's, or ties with it in the reference (its
    reference score within ``tolerance`` of the best)."""
    picked = outputs.argmax(axis=1)
    at_pick = reference[np.arange(len(reference)), picked]
    return float(np.mean(at_pick >= reference.max(axis=1) - tolerance))


def _compare_probabilities(outputs, reference) -> dict:
    return {"agreement": top1_agreement(outputs[0], reference[0]),
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
    names = list(manifest.labels)
    if manifest.task == "text-classification" and set(splits.labels) <= set(names) and splits.labels != names:
        y = np.asarray([names.index(name) for name in splits.labels], dtype=np.int64)[y]  # as export matched them
    return INPUT_BUILDERS[manifest.task](manifest, x), y


def keras_reference(manifest: manifest_io.Manifest, inputs: np.ndarray) -> list[np.ndarray] | None:
    """Outputs of the source Keras model, when TensorFlow is installed and the manifest's source file is here."""
    source = (manifest.get("source") or {}).get("model")
    if not source or not Path(source).is_file():
        return None
    from importlib.util import find_spec

    if find_spec("keras") is None:  # the training stack is optional; load_keras_model imports it quietly
        return None
    if manifest_io.sha256_of(source) != manifest["source"].get("sha256"):
        return None
    from .keras_io import keras_outputs, load_keras_model
    from .keras_text import token_id_model

    sequence_length = (manifest.get("text") or {}).get("sequence_length")
    model, _ = token_id_model(load_keras_model(source), sequence_length)  # a TextVectorization is cut, as at export
    return keras_outputs(model, manifest, inputs)  # an RGB export of a gray model: Keras gets the graph's gray


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
    extra = extra_tests(manifest, formats, threads)
    if extra:
        report["extra_tests"] = extra
        report.setdefault("notes", []).extend(
            f"{name} {test['split']} split (n={test['n']}): " + ", ".join(
                f"{fmt} {scores.get('accuracy', scores.get('map50', float('nan'))):.4f}" if "error" not in scores
                else f"{fmt} error" for fmt, scores in test["results"].items())
            for name, test in extra.items())
    return report


def extra_tests(manifest: manifest_io.Manifest, formats: list[str], threads: int | None = None) -> dict:
    """The task metric per format on each further test set the manifest's ``dataset.extra_tests`` names (a
    registered dataset, its seed, options and split; e.g. drawn digits for the digits model), for any task.

    Old manifests name none: the report is then exactly what it was. A set whose dataset cannot be built here
    (a missing extra) is reported as an error line, not a failure of the whole evaluation.
    """
    from .train.datasets import load_dataset

    report = {}
    for entry in (manifest.get("dataset") or {}).get("extra_tests", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ModelError(f"{manifest.folder}/{manifest_io.MANIFEST_NAME}: dataset.extra_tests holds {entry!r}, "
                             'not {"name": DATASET, "seed": N, "options": {...}, "split": "test"}; fix or remove it')
        name, split = entry["name"], entry.get("split", "test")
        try:
            x, y = load_dataset(name, seed=entry.get("seed", 0), **entry.get("options", {})).split(split)
            inputs = INPUT_BUILDERS[manifest.task](manifest, x)
        except EdgecnnError as exc:
            report[name] = {"split": split, "n": 0, "results": {"all": {"error": str(exc)}}}
            continue
        results = {}
        for fmt in formats:
            try:
                results[fmt] = measure(manifest, fmt, inputs, y, None, threads)
            except EdgecnnError as exc:
                results[fmt] = {"error": str(exc)}
        report[name] = {"split": split, "n": len(y), "results": results}
    return report
