"""The export wing: a Keras model -> ONNX / int8 ONNX / TFLite / int8 TFLite, validated, with a manifest.

``export_model`` is the one public function. It writes into a temporary folder beside the target, validates every
file through ``edgecnn.runtime`` against the Keras model on the held-out split, and only then renames the folder
into place: a refused or crashed export leaves the previous one untouched (like HF Optimum, it refuses rather than
ship a file that disagrees with its source). A killed swap is undone by the next export or load
(:mod:`edgecnn.folders`). The target may only be a new or empty folder or an earlier export, never a file, a
folder of other things or one that holds the export's own inputs: that is checked before anything slow starts.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shutil
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from .. import manifest as manifest_io
from ..errors import ExportRefusedError, InputError
from ..folders import make_staging, recover_swapped, swap_in
from ..manifest import FORMAT_FILES, FORMATS
from . import targets as export_targets
from .converters import INT8_FORMATS, Conversion, convert, converting
from .tflite import INT8_IO

DEFAULT_THRESHOLDS = {"max_diff": 1e-4, "min_agreement": 0.98, "max_map_drop": 0.02, "max_diff_fp16": 5e-2}


def export_model(model_path: str | os.PathLike, out: str | os.PathLike, formats: list[str] | None = None,
                 labels: str | None = None, calibration: str | None = None, calibration_size: int = 200,
                 thresholds: dict | None = None, samples_per_class: int = 2, seed: int = 0,
                 progress: Callable[[str], None] | None = None, preprocessing: dict | None = None,
                 head: dict | None = None, text: dict | None = None, targets: list[str] | None = None,
                 int8_io: str = "int8", metadata: bool = True, int8_fallback: str = "auto",
                 calibration_method: str = "minmax", per_channel: bool = True) -> dict:
    """Export a Keras model to the given formats in ``out``, validated; returns the manifest.

    Args:
        model_path: a ``.keras`` file, a legacy ``.h5`` file or a SavedModel folder. Beside a ``.keras`` file,
            ``run.json`` (written by ``edgecnn train``) names the dataset, labels and preprocessing; for any other
            Keras classifier give ``labels`` and ``calibration``.
        out: the export folder to create or replace.
        formats: a subset of ``onnx, onnx-int8, tflite, tflite-int8, tflite-fp16, tflite-dynamic`` (default all).
        labels: file with one label per line or a JSON list (models not trained by edgecnn).
        calibration: a registered dataset name or an image folder (one sub-folder per class): calibrates int8 and
            provides the held-out split for validation.
        calibration_size: how many training examples feed the int8 calibration.
        thresholds: override ``DEFAULT_THRESHOLDS`` (fp32 ``max_diff``, int8 ``min_agreement``, ``max_map_drop``,
            tflite-fp16 ``max_diff_fp16``, relative to the largest output; see ``ExportAdapter.failures`` for which rule meets which format).
        samples_per_class: test-split samples to ship in ``samples/``.
        preprocessing: models not trained by edgecnn: ``{"preset": "tf"}`` and/or explicit ``mean``, ``std``,
            ``scale``, ``offset``, ``channels_order`` (see :mod:`edgecnn.presets`); default: the preset of a
            recognised keras.applications architecture, else ``unit``.
        head: ``{"outputs": "logits"}`` (the model gives logits: the runtime applies softmax) and/or
            ``{"multi_label": True}`` (one sigmoid per label); default: read from the last layer's activation.
        text: text models on token ids: ``{"vocabulary": FILE, "sequence_length": N, "standardize": MODE}`` (see
            :mod:`edgecnn.export.user_text`); a model starting with ``TextVectorization`` needs none of them.
        targets: runtimes besides edgecnn's to make the files for (``opencv``, ``mobile``, ...: see
            :mod:`edgecnn.export.targets`); default none, the usual files.
        int8_io: the tflite-int8 file's float input and output dtype: ``int8`` (default), ``uint8`` (Android,
            MediaPipe) or ``float`` (float32, quantized inside the file); the runtime converts any of them.
        metadata: write TFLite Model Metadata (name, normalization, labels: :mod:`edgecnn.export.metadata`) into
            every ``.tflite`` file; False leaves the converter's files as they are.
        int8_fallback: ``auto`` (default): an int8 file that fails its gate is made again with its worst layers
            kept in float, one more at a time (:mod:`edgecnn.export.fallback`); ``off``: refused at once.
        calibration_method, per_channel: the ONNX int8 recipe (:func:`edgecnn.export.onnx.quantize_onnx`):
            ``minmax``, ``entropy`` or ``percentile`` activation ranges; per-channel or per-tensor weights
            (``per_channel`` is tflite-int8's choice too: per-tensor drops 12 bytes per output channel, twice).

    Raises:
        InputError: ``out`` is a file, a folder that is not an earlier export, or holds an input of this export
            (checked before TensorFlow is loaded).
        ExportRefusedError: a file disagrees with Keras beyond the thresholds (the previous export is kept).

    Example::

        export_model("runs/digits-cnn/model.keras", "exported/digits-cnn")
    """
    say = progress or (lambda message: None)
    formats = list(formats or FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if int8_io not in INT8_IO:
        raise InputError(f"--int8-io {int8_io!r}: choose from {', '.join(INT8_IO)}")
    _check_int8_choices(int8_fallback, calibration_method)
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    chosen_targets = export_targets.check_names(targets)
    model_path, out = Path(model_path), Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    recover_swapped(out)
    _check_model_path(model_path)
    _check_target(out, _inputs_of(model_path, labels, calibration) + [
        Path(p) for p in [(text or {}).get("vocabulary")] if p and os.path.lexists(p)])

    from ..evaluate import measure
    from ..keras_io import import_tensorflow, keras_outputs, load_keras_model
    from .tasks import adapter_for
    from .user_text import user_text_model

    tf = import_tensorflow()
    say(f"loading {model_path}")
    model = load_keras_model(model_path)
    model, text = user_text_model(model, model_path, text)  # a TextVectorization first layer is cut off
    run, splits = _run_and_splits(model, model_path, labels, calibration, seed, preprocessing, head, text)
    adapter = adapter_for(run["task"])(model, splits, run)
    sections = adapter.manifest_sections()
    inputs, targets = adapter.model_inputs(splits.x_test), splits.y_test
    reference = keras_outputs(model, sections, inputs)
    keras_metric = _score(sections, reference, targets)
    say(f"Keras on the held-out split ({len(targets)}): {_fmt_metric(keras_metric)}")
    chance = _chance_warning(sections, keras_metric, targets)
    if chance:
        say(f"warning: {chance}")

    staging = make_staging(out)
    contexts = [export_targets.TargetContext(name, staging, run, sections, formats, say=say, inputs=inputs,
                                             reference=reference) for name in chosen_targets]
    for ctx, reason in zip(contexts, export_targets.call(contexts, "check")):
        if reason:
            shutil.rmtree(staging, ignore_errors=True)
            raise ExportRefusedError(f"export refused, --target {ctx.name}: {reason}")
    try:
        serve = export_targets.serving(contexts, adapter.serving_fn(tf))
        inputs = export_targets.model_inputs(contexts, inputs)  # as the served function takes them
        for ctx in contexts:
            ctx.inputs = inputs
        int8_io = export_targets.int8_io(contexts, int8_io)
        calib = export_targets.model_inputs(contexts, adapter.calibration_inputs(calibration_size, seed))
        about = {"sections": sections, "name": out.name} if metadata else None  # TFLite Model Metadata
        job = Conversion(staging, serve, model, run["task"], splits.labels, sections["input"]["name"], calib,
                         contexts, int8_io=int8_io, metadata=about, per_channel=per_channel,
                         calibration_method=calibration_method,
                         onnx_exclude_op_types=tuple(run.get("onnx_int8_exclude", ())), say=say)
        files = convert(job, formats)
        for ctx in contexts:
            ctx.files = files
        if "onnx" not in formats and "onnx" in files:
            del files["onnx"]  # the file stays until validation is over: the int8 fallback re-quantizes it
        samples = adapter.write_samples(staging / "samples", reference, samples_per_class)
        data = {
            "schema": manifest_io.SCHEMA_VERSION,
            "name": out.name,
            **sections,
            "dataset": splits.describe(),
            "files": {fmt: manifest_io.file_entry(staging, FORMAT_FILES[fmt], format=fmt, **files[fmt])
                      for fmt in FORMATS if fmt in files},
            "samples": samples,
            "source": {"model": str(model_path), "sha256": _source_sha256(model_path),
                       "architecture": run.get("model"), "parameters": int(model.count_params())},
            "versions": _versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **{k: v for k, v in run.items() if k in ("text", "detection") and k not in sections},
        }
        manifest_io.write(staging, data)
        staged = manifest_io.read(staging)
        parity, problems = {"keras": keras_metric}, []
        output_scale = max([1.0, *(float(np.max(np.abs(r))) for r in reference if np.size(r))])

        def gate(fmt: str) -> tuple[dict, list[str]]:  # a re-made int8 file, measured as the first one was
            measured = measure(manifest_io.read(staging), fmt, inputs, targets, reference)
            return measured, adapter.failures(fmt, measured, keras_metric, limits)

        for fmt in staged.formats:
            say(f"validating {fmt}")
            parity[fmt] = measure(staged, fmt, inputs, targets, reference)
            if fmt == "tflite-fp16":  # its gate is relative to the outputs' scale (ExportAdapter.failures)
                parity[fmt]["max_rel_diff"] = parity[fmt]["max_abs_diff"] / output_scale
            failures = adapter.failures(fmt, parity[fmt], keras_metric, limits)
            if failures and fmt in INT8_FORMATS:  # name the worst layers; with auto, retry with them in float
                parity[fmt], failures = _float_fallback(
                    fmt, int8_fallback, partial(job.make_int8, fmt), staging, data, files, parity[fmt], failures,
                    calib, say, gate=gate,
                    reference=lambda folder, fmt=fmt: _fp32_sibling(fmt, staging, folder, serve, model))
            problems += failures
        # a target's own files (.ort) are made from the validated ones, after any int8 float fallback re-made them
        extra = {key: entry for added in export_targets.call(contexts, "extra_files") for key, entry in added.items()}
        data["files"].update({key: manifest_io.file_entry(staging, entry["path"], format=key,
                                                          **{k: v for k, v in entry.items() if k != "path"})
                              for key, entry in extra.items()})
        manifest_io.write(staging, data)
        for key in extra:
            say(f"validating {key}")
            parity[key] = measure(manifest_io.read(staging), key, inputs, targets, reference)
            problems += adapter.failures(key, parity[key], keras_metric, limits)
        data["validation"] = {"split": "test", "n": len(targets), "thresholds": limits, "results": parity,
                              **({"warnings": [chance]} if chance else {})}
        manifest_io.write(staging, data)
        if problems:
            raise ExportRefusedError("export refused, " + "; ".join(problems) +
                                     (f" (previous export in {out} kept)" if out.exists() else ""))
        if "onnx" not in formats:  # kept until now for the int8 fallback
            (staging / FORMAT_FILES["onnx"]).unlink(missing_ok=True)
        _record_verification(data, manifest_io.read(staging), contexts)
        manifest_io.write(staging, data)
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return data


def _check_int8_choices(int8_fallback: str, calibration_method: str) -> None:
    from .fallback import MODES
    from .onnx import CALIBRATION_METHODS

    if int8_fallback not in MODES:
        raise InputError(f"--int8-fallback {int8_fallback!r}: choose from {', '.join(MODES)}")
    if calibration_method not in CALIBRATION_METHODS:
        raise InputError(f"--calibration-method {calibration_method!r}: choose from {', '.join(CALIBRATION_METHODS)}")


def _float_fallback(fmt: str, mode: str, make: Callable, staging: Path, data: dict, files: dict, measured: dict,
                    failures: list[str], calib, say: Callable, gate: Callable, reference: Callable):
    """The hook of :func:`edgecnn.export.fallback.rescue`: a re-made file is recorded in the staged manifest
    (sha256, and a TFLite file's own input/output quantization) before it is measured; the record of what stayed
    in float goes into its ``files`` entry."""
    from .fallback import Int8Job, rescue
    from .tflite import tensor_quantization

    path = staging / FORMAT_FILES[fmt]

    def check() -> tuple[dict, list[str]]:
        if fmt == "tflite-int8":
            files[fmt]["quantization"].update(tensor_quantization(path))
        data["files"][fmt] = manifest_io.file_entry(staging, FORMAT_FILES[fmt], format=fmt, **files[fmt])
        manifest_io.write(staging, data)
        return gate(fmt)

    job = Int8Job(fmt, path, make, check, reference)
    with converting(fmt, [fmt]):
        measured, failures, record = rescue(job, measured, failures, calib, mode, say=say)
    if record:  # not "full integer" any more: the method says how many layers stayed in float
        from .fallback import kept_in_float

        method = files[fmt]["quantization"]["method"]
        files[fmt]["quantization"]["method"] = (kept_in_float(len(record["nodes"])) if fmt == "tflite-int8"
                                                else f"{method}; {kept_in_float(len(record['nodes']))}")
        files[fmt]["float_fallback"] = record
        data["files"][fmt] = manifest_io.file_entry(staging, FORMAT_FILES[fmt], format=fmt, **files[fmt])
    return measured, failures


def _fp32_sibling(fmt: str, staging: Path, folder: Path, serve, model) -> Path:
    """The fp32 file an int8 one is ranked against: the staged one, or (tflite not exported) one made in
    ``folder``; the fp32 ONNX file is always staged when its int8 sibling is."""
    from .quantize import FP32_SIBLING
    from .tflite import export_tflite

    path = staging / FORMAT_FILES[FP32_SIBLING[fmt]]
    if path.is_file():
        return path
    return export_tflite(serve, model, folder / FORMAT_FILES[FP32_SIBLING[fmt]])


def _record_verification(data: dict, staged, contexts: list) -> None:
    """Each file's ``verified_in`` (edgecnn's runtime, which validation just ran it in, then whatever the targets'
    own runtimes verified) and each target's notes in ``targets``."""
    for entry in data["files"].values():
        entry["verified_in"] = {"edgecnn": __version__}
    for verified in export_targets.call(contexts, "verify", staged):
        for key, runtimes in (verified or {}).items():
            data["files"][key]["verified_in"].update(runtimes)
    if contexts:
        data["targets"] = {ctx.name: ctx.notes for ctx in contexts}


def _score(sections: dict, outputs, targets) -> dict:
    from ..evaluate import SCORERS

    return SCORERS[sections["task"]](sections, outputs, targets)


def _fmt_metric(metric: dict) -> str:
    """The headline metrics on one line (per-label ``f1:LABEL`` values are in the manifest, not here)."""
    return ", ".join(f"{k} {v:.4f}" for k, v in metric.items() if ":" not in k and v is not None)


def _chance_warning(sections: dict, metric: dict, targets) -> str | None:
    """A sentence when the source model's own accuracy on the held-out split is no better than guessing the most
    common class: it still exports (parity is about the files, not the model), but nobody should mistake it for a
    model that learned something."""
    if "accuracy" not in metric or not len(targets):
        return None
    counts = np.bincount(np.asarray(targets, dtype=np.int64).ravel())
    chance = float(counts.max() / counts.sum())
    if metric["accuracy"] > chance + 0.5 / len(targets) + 0.02:
        return None
    return (f"the Keras model itself is at chance level on the held-out split (accuracy {metric['accuracy']:.2%}, "
            f"guessing the most common class gives {chance:.2%}): the export matches it, but it has learned nothing "
            "useful on this data (wrong labels order, preprocessing, or untrained weights?)")


def _source_sha256(model_path: Path) -> str:
    """The source's sha256: the file's, or a SavedModel folder's saved_model.pb."""
    return manifest_io.sha256_of(model_path / "saved_model.pb" if model_path.is_dir() else model_path)


def _run_and_splits(model, model_path: Path, labels: str | None, calibration: str | None, seed: int,
                    preprocessing: dict | None = None, head: dict | None = None, text: dict | None = None):
    """run.json beside the model (edgecnn-trained) or labels + calibration (any Keras classifier)."""
    from ..presets import choose_preprocessing
    from ..train.datasets import DATASETS, image_preprocessing, load_dataset
    from ..train.fit import RUN_FILE
    from .tasks import classifier_head, image_model_shape, read_labels
    from .user_text import takes_token_ids, text_run_and_splits

    run_file = model_path.parent / RUN_FILE
    if run_file.is_file() and not calibration and not model_path.is_dir():
        given = [f"--{ {'preset': 'preprocess'}.get(k, k).replace('_', '-')}"
                 for k, v in {**(preprocessing or {}), **(head or {})}.items() if v]
        if given:
            raise InputError(f"{model_path} was trained by edgecnn: its preprocessing and head come from {run_file}, "
                             f"so {', '.join(given)} would be ignored; leave {'them' if len(given) > 1 else 'it'} "
                             "out (or pass --calibration to export it as a model of your own)")
        run = json.loads(run_file.read_text())
        dataset = run["dataset"]
        splits = load_dataset(dataset["name"], seed=dataset.get("seed", 0), **dataset.get("options", {}))
        # The run's own record wins: a backbone's trainer adds its preset (scale, offset) to the dataset's.
        splits.preprocessing = run.get("preprocessing") or splits.preprocessing
        if labels:
            splits.labels = read_labels(labels)
            width = int(model.outputs[0].shape[-1])
            if run["task"] != "object-detection" and len(splits.labels) != width:
                raise InputError(f"--labels {labels} lists {len(splits.labels)} labels but {model_path} gives "
                                 f"{width} class scores; give one label per output, in order")
        return run, splits
    if not calibration:
        raise InputError(f"{model_path} has no {RUN_FILE} beside it (not trained by edgecnn): pass --labels FILE "
                         "and --calibration DATASET_OR_FOLDER")
    if text or takes_token_ids(model):  # a user's text model: its vocabulary, not run.json
        return text_run_and_splits(model, model_path, labels, calibration, seed, text, head)
    height, width, channels = image_model_shape(model, model_path)
    if calibration in DATASETS or not Path(calibration).exists():
        splits = load_dataset(calibration, seed=seed)
    else:
        # absolute: the manifest's dataset section must lead `edgecnn eval` to it from any folder
        splits = load_dataset("folder", seed=seed, data=str(Path(calibration).resolve()), size=height,
                              color_mode="L" if channels == 1 else "RGB")
        splits.preprocessing = image_preprocessing(height, width, channels)
    if splits.task != "image-classification":
        raise InputError(f"--calibration {calibration} is a {splits.task} dataset; {model_path} is exported as an "
                         "image classifier: give an image folder (one sub-folder per class)")
    if labels:
        splits.labels = read_labels(labels)
    options = dict(preprocessing or {})
    splits.preprocessing = {**splits.preprocessing,
                            **choose_preprocessing(model, channels, options.pop("preset", None), **options)}
    kind, reason = classifier_head(model, model_path, splits, **(head or {}))
    return {"task": splits.task, "model": model.name, "output_kind": kind, "output_reason": reason}, splits


def _check_model_path(model_path: Path) -> None:
    from ..keras_io import KERAS_SUFFIXES, SUPPORTED_MODELS, is_saved_model

    if is_saved_model(model_path):
        return
    if model_path.is_file() and model_path.suffix.lower() not in KERAS_SUFFIXES:
        raise InputError(f"{model_path} is not a model edgecnn can export; it exports {SUPPORTED_MODELS}")
    if model_path.is_dir():
        inside = sorted(model_path.glob("*.keras"))
        hint = f"e.g. {inside[0]}" if inside else "the model.keras written by 'edgecnn train'"
        raise InputError(f"{model_path} is a folder; pass the .keras file to export ({hint})")
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such file; pass the model.keras written by 'edgecnn train'")


def _inputs_of(model_path: Path, labels: str | None, calibration: str | None) -> list[Path]:
    """Every file or folder this export reads: the model, its run.json, labels, calibration and training data."""
    from ..train.fit import RUN_FILE

    inputs = [model_path, model_path.parent / RUN_FILE]
    if labels:
        inputs.append(Path(labels))
    if calibration and Path(calibration).exists():
        inputs.append(Path(calibration))
    try:
        options = json.loads((model_path.parent / RUN_FILE).read_text()).get("dataset", {}).get("options", {})
        inputs += [Path(options[key]) for key in ("data", "images") if isinstance(options.get(key), str)]
    except (OSError, ValueError, AttributeError):
        pass
    return [path for path in inputs if os.path.lexists(path)]


def _check_target(out: Path, inputs: list[Path]) -> None:
    """Refuse a target the swap would destroy something in: an export replaces nothing but an earlier export."""
    target = out.resolve()
    for path in inputs:
        source = path.resolve()
        if source == target or target in source.parents:
            relation = "is" if source == target else "contains"
            raise InputError(f"--out {out} {relation} {path}, an input of this export, which the export would "
                             f"delete; choose another folder, e.g. exported/{_export_name(path)}")
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; an export replaces only an earlier export, so "
                         "choose a new folder name")
    try:
        replaceable = (out / manifest_io.MANIFEST_NAME).is_file() or not any(out.iterdir())
    except OSError as exc:
        raise InputError(f"--out {out} cannot be read ({exc.strerror}); choose a folder you can write") from None
    if not replaceable:
        raise InputError(f"--out {out} is a folder with no {manifest_io.MANIFEST_NAME}, not an earlier export; "
                         "an export replaces only an earlier one, so choose a new or empty folder")


def _export_name(path: Path) -> str:
    """A folder name for the export of ``path`` (its run folder's name), for advice."""
    return (path.parent.name if path.suffix == ".keras" else path.name) or "model"


def _versions() -> dict:
    versions = {"edgecnn": __version__, "python": platform.python_version()}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert",
                 "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
