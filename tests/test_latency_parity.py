"""Latency parity: robust comparisons measured side by side, never absolute times (the machine is shared).

Each comparison interleaves the two sides call by call and compares medians, with generous margins, so that a busy
machine slows both alike instead of failing the test.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

import edgecnn
from edgecnn import manifest as manifest_io

from .conftest import EXPORTED, ROOT
from .test_runtime_line import FORBIDDEN

EXPORTS = sorted(p.parent for p in EXPORTED.glob("*/edgecnn.json"))


def medians(contenders: dict, x: np.ndarray, rounds: int) -> dict[str, float]:
    """Median seconds per call of each contender, calls interleaved (a, b, b, a, ...) after a short warm-up."""
    names = list(contenders)
    for name in names:
        for _ in range(3):
            contenders[name](x)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            contenders[name](x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def one_input(task) -> np.ndarray:
    """A batch-1 model input of this export, made from its first sample by the task's own preprocessing."""
    from edgecnn.runtime.image import IMAGE_SUFFIXES

    text = task.task == "text-classification"
    samples = sorted(p for p in (task.manifest.folder / "samples").iterdir()
                     if p.suffix.lower() in ({".txt"} if text else IMAGE_SUFFIXES))
    item = samples[0].read_text(encoding="utf-8") if text else str(samples[0])
    prepared = task.preprocess(item)
    return prepared[0] if isinstance(prepared, tuple) else prepared


def step(task):
    """The task's preprocessed-input path, decode and NMS included for detectors (what ``edgecnn bench`` times)."""
    if task.task == "object-detection":
        return lambda x: task.decode(task.run(x))
    return task.predict


def keras_model(manifest):
    """The export's source model when its file is here, else the same registered architecture (same cost)."""
    from edgecnn.keras_io import load_keras_model

    source = (manifest.get("source") or {}).get("model")
    if source and (ROOT / source).is_file():
        return load_keras_model(ROOT / source)
    from edgecnn.train.models import create_model

    architecture = (manifest.get("source") or {}).get("architecture")
    if not architecture:
        pytest.skip(f"{manifest.folder}: no source model file and no architecture name to rebuild it")
    return create_model(architecture, tuple(manifest["input"]["shape"][1:]), len(manifest.labels))


def test_every_exported_format_is_faster_than_keras_predict_at_batch_1(digits_export):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed (train extra)")
    manifest = manifest_io.read(digits_export)
    model = keras_model(manifest)
    tasks = {fmt: edgecnn.load(digits_export, format=fmt) for fmt in manifest.formats}
    x = one_input(next(iter(tasks.values())))
    from edgecnn.keras_io import keras_inputs  # an RGB export of a gray model: Keras takes the gray

    contenders = {"keras": lambda batch: model.predict(keras_inputs(model, manifest, batch), verbose=0),
                  **{fmt: step(task) for fmt, task in tasks.items()}}
    measured = medians(contenders, x, rounds=7)
    slower = {fmt: t for fmt, t in measured.items() if fmt != "keras" and t >= measured["keras"]}
    assert not slower, f"not faster than Keras model.predict ({measured['keras'] * 1e3:.2f} ms): {slower}"


@pytest.mark.parametrize("export", [p for p in EXPORTS if (p / "edgecnn.json").is_file()], ids=lambda p: p.name)
def test_int8_tflite_is_not_slower_than_one_and_a_half_fp32_onnx(export):
    manifest = manifest_io.read(export)
    if not {"onnx", "tflite-int8"} <= set(manifest.formats):
        pytest.skip(f"{export.name} lacks model.onnx or model.int8.tflite")
    onnx, int8 = edgecnn.load(export, format="onnx"), edgecnn.load(export, format="tflite-int8")
    x = one_input(onnx)
    measured = medians({"onnx": step(onnx), "tflite-int8": step(int8)}, x, rounds=300)
    assert measured["tflite-int8"] <= 1.5 * measured["onnx"], measured


def test_edgecnn_infer_imports_no_training_module_nor_package_metadata(digits_export):
    """What ``edgecnn infer`` loads is its start-up cost: no training/export wing, and no importlib.metadata (tens
    of ms) — the default format is chosen from what is importable, not from package metadata."""
    sample = next((digits_export / "samples").glob("*.png"))
    # main() ends `infer` with os._exit (no interpreter teardown): here it raises SystemExit instead, so that the
    # probe lives on to list what the run imported
    probe = (f"import json, os, sys\nfrom edgecnn.cli import main\nsys.argv = ['edgecnn', 'infer', {str(sample)!r}, "
             f"'--model', {str(digits_export)!r}]\ndef _exit(code):\n    raise SystemExit(code)\nos._exit = _exit\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code\n"
             "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert not {m.split(".")[0] for m in modules} & set(FORBIDDEN)
    ours = {m for m in modules if m.startswith(("edgecnn.train", "edgecnn.export", "edgecnn.evaluate",
                                                "edgecnn.bench", "edgecnn.report"))}
    assert not ours, ours
    assert "importlib.metadata" not in modules
