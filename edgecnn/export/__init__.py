"""The export wing: a Keras model -> ONNX / int8 ONNX / TFLite / int8 TFLite, validated, with a manifest.

``export_model`` is the one public function. It writes into a temporary folder beside the target, validates every
file through ``edgecnn.runtime`` against the Keras model on the held-out split, and only then renames the folder
into place: a refused or crashed export leaves the previous one untouched (like HF Optimum, it refuses rather than
ship a file that disagrees with its source).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .. import __version__
from .. import manifest as manifest_io
from ..errors import ExportRefusedError, InputError
from ..manifest import FORMAT_FILES, FORMATS

DEFAULT_THRESHOLDS = {"max_diff": 1e-4, "min_agreement": 0.98, "max_map_drop": 0.02}


def export_model(model_path: str | os.PathLike, out: str | os.PathLike, formats: list[str] | None = None,
                 labels: str | None = None, calibration: str | None = None, calibration_size: int = 200,
                 thresholds: dict | None = None, samples_per_class: int = 2, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Export a Keras model to the given formats in ``out``, validated; returns the manifest.

    Args:
        model_path: a ``.keras`` file. Beside it, ``run.json`` (written by ``edgecnn train``) names the dataset,
            labels and preprocessing; for any other Keras classifier give ``labels`` and ``calibration``.
        out: the export folder to create or replace.
        formats: a subset of ``onnx, onnx-int8, tflite, tflite-int8`` (default all four).
        labels: file with one label per line or a JSON list (models not trained by edgecnn).
        calibration: a registered dataset name or an image folder (one sub-folder per class): calibrates int8 and
            provides the held-out split for validation.
        calibration_size: how many training examples feed the int8 calibration.
        thresholds: override ``DEFAULT_THRESHOLDS`` (fp32 ``max_diff``, int8 ``min_agreement``, ``max_map_drop``).
        samples_per_class: test-split samples to ship in ``samples/``.

    Raises:
        ExportRefusedError: a file disagrees with Keras beyond the thresholds (the previous export is kept).

    Example::

        export_model("runs/digits-cnn/model.keras", "exported/digits-cnn")
    """
    from ..evaluate import measure
    from ..keras_io import import_tensorflow, keras_outputs, load_keras_model
    from .onnx import export_onnx, onnx_metadata, quantize_onnx
    from .tasks import adapter_for
    from .tflite import export_tflite, tensor_quantization

    say = progress or (lambda message: None)
    formats = list(formats or FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    model_path, out = Path(model_path), Path(out)
    tf = import_tensorflow()
    say(f"loading {model_path}")
    model = load_keras_model(model_path)
    run, splits = _run_and_splits(model, model_path, labels, calibration, seed)
    adapter = adapter_for(run["task"])(model, splits, run)
    sections = adapter.manifest_sections()
    inputs, targets = adapter.model_inputs(splits.x_test), splits.y_test
    reference = keras_outputs(model, sections, inputs)
    keras_metric = _score(sections, reference, targets)
    say(f"Keras on the held-out split ({len(targets)}): {_fmt_metric(keras_metric)}")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        serve = adapter.serving_fn(tf)
        calib = adapter.calibration_inputs(calibration_size, seed)
        files: dict[str, dict] = {}
        if "onnx" in formats or "onnx-int8" in formats:
            say("ONNX fp32 (tf2onnx)")
            export_onnx(serve, staging / FORMAT_FILES["onnx"], onnx_metadata(run["task"], splits.labels))
            files["onnx"] = {"precision": "fp32", "runtime": "onnxruntime"}
        if "onnx-int8" in formats:
            say(f"ONNX int8 (onnxruntime static QDQ, {len(calib)} calibration examples)")
            quantize_onnx(staging / FORMAT_FILES["onnx"], staging / FORMAT_FILES["onnx-int8"],
                          sections["input"]["name"], calib,
                          exclude_op_types=tuple(run.get("onnx_int8_exclude", ())))
            files["onnx-int8"] = {"precision": "int8", "runtime": "onnxruntime",
                                  "quantization": {"method": "static QDQ, per-channel weights, MinMax calibration",
                                                   "calibration_examples": len(calib)}}
        if "tflite" in formats:
            say("TFLite fp32")
            export_tflite(serve, model, staging / FORMAT_FILES["tflite"])
            files["tflite"] = {"precision": "fp32", "runtime": "litert"}
        if "tflite-int8" in formats:
            say(f"TFLite int8 (full integer, {len(calib)} calibration examples)")
            export_tflite(serve, model, staging / FORMAT_FILES["tflite-int8"], calibration=calib, int8=True)
            files["tflite-int8"] = {"precision": "int8", "runtime": "litert",
                                    "quantization": {"method": "full integer (TFLITE_BUILTINS_INT8)",
                                                     "calibration_examples": len(calib),
                                                     **tensor_quantization(staging / FORMAT_FILES["tflite-int8"])}}
        if "onnx" not in formats and "onnx" in files:
            (staging / FORMAT_FILES["onnx"]).unlink()
            del files["onnx"]
        samples = adapter.write_samples(staging / "samples", reference, samples_per_class)
        data = {
            "schema": manifest_io.SCHEMA_VERSION,
            "name": out.name,
            **sections,
            "dataset": splits.describe(),
            "files": {fmt: manifest_io.file_entry(staging, FORMAT_FILES[fmt], format=fmt, **files[fmt])
                      for fmt in FORMATS if fmt in files},
            "samples": samples,
            "source": {"model": str(model_path), "sha256": manifest_io.sha256_of(model_path),
                       "architecture": run.get("model"), "parameters": int(model.count_params())},
            "versions": _versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **{k: v for k, v in run.items() if k in ("text", "detection")},
        }
        manifest_io.write(staging, data)
        staged = manifest_io.read(staging)
        parity, problems = {"keras": keras_metric}, []
        for fmt in staged.formats:
            say(f"validating {fmt}")
            parity[fmt] = measure(staged, fmt, inputs, targets, reference)
            problems += adapter.failures(fmt, parity[fmt], keras_metric, limits)
        data["validation"] = {"split": "test", "n": len(targets), "thresholds": limits, "results": parity}
        manifest_io.write(staging, data)
        if problems:
            raise ExportRefusedError("export refused, " + "; ".join(problems) +
                                     (f" (previous export in {out} kept)" if out.exists() else ""))
        _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return data


def _score(sections: dict, outputs, targets) -> dict:
    from ..evaluate import SCORERS

    return SCORERS[sections["task"]](sections, outputs, targets)


def _fmt_metric(metric: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metric.items())


def _run_and_splits(model, model_path: Path, labels: str | None, calibration: str | None, seed: int):
    """run.json beside the model (edgecnn-trained) or labels + calibration (any Keras classifier)."""
    from ..train.datasets import DATASETS, image_preprocessing, load_dataset
    from ..train.fit import RUN_FILE
    from .tasks import read_labels

    run_file = model_path.parent / RUN_FILE
    if run_file.is_file() and not calibration:
        run = json.loads(run_file.read_text())
        dataset = run["dataset"]
        splits = load_dataset(dataset["name"], seed=dataset.get("seed", 0), **dataset.get("options", {}))
        if labels:
            splits.labels = read_labels(labels)
        return run, splits
    if not calibration:
        raise InputError(f"{model_path} has no {RUN_FILE} beside it (not trained by edgecnn): pass --labels FILE "
                         "and --calibration DATASET_OR_FOLDER")
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:4])
    if calibration in DATASETS or not Path(calibration).exists():
        splits = load_dataset(calibration, seed=seed)
    else:
        splits = load_dataset("folder", seed=seed, data=calibration, size=height,
                              color_mode="L" if channels == 1 else "RGB")
        splits.preprocessing = image_preprocessing(height, width, channels)
    if labels:
        splits.labels = read_labels(labels)
    n_out = int(model.outputs[0].shape[-1])
    if len(splits.labels) != n_out:
        raise InputError(f"the model has {n_out} outputs but {len(splits.labels)} labels were given")
    return {"task": splits.task, "model": model.name}, splits


def _replace_folder(staging: Path, out: Path) -> None:
    """Swap ``staging`` into ``out``; the old folder is removed only after the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict:
    versions = {"edgecnn": __version__, "python": platform.python_version()}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert",
                 "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
