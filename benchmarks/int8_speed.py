"""int8 against fp32, side by side: why onnxruntime's int8 was slower than fp32, and what edgecnn's recipe gives now.

Two parts, each timed at batch 1 with the same thread count for every file, one call of each file in turn per
round (rotated each round) so that load from other processes hits all of them alike; ratios are medians of the
per-round ratios int8 / its fp32 sibling, with their 10th-90th percentile spread.

1. ``keras.applications.MobileNetV2`` at 96x96 (random weights: speed does not depend on them; nothing is
   downloaded), exported with edgecnn's own functions (``export_onnx``, ``export_tflite``, ``quantize_onnx``),
   calibrated on 64 crops of scikit-learn's two sample photographs, quantized with each candidate recipe:
   int8 vs uint8 activations (S8S8 / U8S8), per-channel vs per-tensor weights, reduce_range, QOperator vs QDQ,
   with and without ``quant_pre_process``, and onnxruntime's graph optimization level. For each ONNX file it also
   counts the Convs onnxruntime still runs in float after its optimizations: the cause of a slow int8 file.
   The quantization report (``edgecnn quantize-report``'s code) runs on the two int8 files it ships.
2. Every committed export in ``exported/``: fp32 against the committed int8 files, and against its ``model.onnx``
   quantized again with the current recipe (same calibration as ``edgecnn export``: 200 training examples, seed 0),
   whose accuracy is checked against the export gates, to tell whether a re-export is worth it.

The building runs in a child process (TensorFlow); the timing process imports only the runtimes.

Usage: python benchmarks/int8_speed.py [--rounds 600] [--threads 1,2] [--no-exports]. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SIZE = 96
CALIBRATION = 64
#: ONNX variants of MobileNetV2: name -> (file, session options); "fp32" variants are their own reference
ONNX_VARIANTS = {
    "onnx fp32": ("model.onnx", {}),
    "onnx fp32, ORT_ENABLE_EXTENDED": ("model.onnx", {"level": "extended"}),
    "int8 S8S8 (edgecnn before)": ("s8s8.onnx", {}),
    "int8 S8S8, qdqisint8allowed=1": ("s8s8.onnx", {"int8_allowed": True}),
    "int8 U8S8 (edgecnn now)": ("u8s8.onnx", {}),
    "int8 U8S8, ORT_ENABLE_EXTENDED": ("u8s8.onnx", {"level": "extended"}),
    "int8 U8S8, per-tensor weights": ("u8s8_per_tensor.onnx", {}),
    "int8 U8S8, reduce_range": ("u8s8_reduce_range.onnx", {}),
    "int8 U8S8, without quant_pre_process": ("u8s8_no_preprocess.onnx", {}),
    "int8 U8S8, QOperator": ("u8s8_qoperator.onnx", {}),
    "int8 S8S8, QOperator": ("s8s8_qoperator.onnx", {}),
}
#: quantize_onnx options of each int8 file above
RECIPES = {
    "s8s8.onnx": {"activations": "int8"},
    "u8s8.onnx": {},
    "u8s8_per_tensor.onnx": {"per_channel": False},
    "u8s8_reduce_range.onnx": {"reduce_range": True},
    "u8s8_qoperator.onnx": {"quant_format": "qoperator"},
    "s8s8_qoperator.onnx": {"activations": "int8", "quant_format": "qoperator"},
}


# --- building (child process, TensorFlow) --------------------------------------------------------------------------

def sample_crops(count: int, seed: int) -> np.ndarray:
    """``count`` random square crops of scikit-learn's two sample photographs at SIZE x SIZE, scaled to [-1, 1]
    as MobileNetV2 expects: real image statistics for calibration without a dataset download."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(SIZE, min(photo.shape[:2])))
        y, x = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
        crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((SIZE, SIZE), Image.BILINEAR)
        crops.append(np.asarray(crop, np.float32) / 127.5 - 1.0)
    return np.stack(crops)


def build(folder: Path) -> None:
    """MobileNetV2 96x96 -> model.onnx, model.tflite, model.int8.tflite and every int8 ONNX recipe, in ``folder``."""
    from edgecnn.export.onnx import export_onnx, quantize_onnx
    from edgecnn.export.tflite import export_tflite
    from edgecnn.keras_io import import_tensorflow

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), weights=None, classes=10)
    calibration = sample_crops(CALIBRATION, seed=0)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="image")])
    def serve(image):
        return {"probabilities": model(image, training=False)}

    export_onnx(serve, folder / "model.onnx")
    export_tflite(serve, model, folder / "model.tflite")
    export_tflite(serve, model, folder / "model.int8.tflite", calibration=calibration, int8=True)
    for name, options in RECIPES.items():
        quantize_onnx(folder / "model.onnx", folder / name, "image", calibration, **options)
    _quantize_without_preprocess(folder / "model.onnx", folder / "u8s8_no_preprocess.onnx", calibration)


def _quantize_without_preprocess(source: Path, target: Path, calibration: np.ndarray) -> None:
    """The current recipe minus ``quant_pre_process`` (quantize_onnx always runs it), to measure what it is worth."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgecnn.export.onnx import _Calibration

    batches = [calibration[i:i + 16] for i in range(0, len(calibration), 16)]
    quantize_static(str(source), str(target), _Calibration("image", batches),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


# --- timing --------------------------------------------------------------------------------------------------------

def onnx_runner(path: Path, threads: int, level: str = "all", int8_allowed: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
    if int8_allowed:
        options.add_session_config_entry("session.qdqisint8allowed", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def litert_runner(path: Path, threads: int):
    from edgecnn.runtime.backends import import_litert_interpreter

    interpreter = import_litert_interpreter()(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    scale, zero_point = source["quantization"]
    dtype = np.dtype(source["dtype"])

    def run(x):
        if scale and dtype.kind == "i":
            x = np.clip(np.rint(x / scale) + zero_point, -128, 127).astype(dtype)
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


def interleaved(runners: dict, x: np.ndarray, rounds: int, siblings: dict[str, str]) -> dict:
    """p50/p10/p90 ms of each runner, one call each per round in rotated order; per-round ratios to siblings."""
    names = list(runners)
    for run in runners.values():  # warm-up: first calls allocate and pack weights
        for _ in range(10):
            run(x)
    times = {name: np.empty(rounds) for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name](x)
            times[name][r] = time.perf_counter() - start
    results = {}
    for name in names:
        ms = times[name] * 1e3
        row = {"p50_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
               "p90_ms": float(np.percentile(ms, 90))}
        sibling = siblings.get(name)
        if sibling and sibling != name:
            ratios = times[name] / times[sibling]
            row.update(vs=sibling, ratio=float(np.median(ratios)), ratio_p10=float(np.percentile(ratios, 10)),
                       ratio_p90=float(np.percentile(ratios, 90)))
        results[name] = row
    return results


def float_convs(path: Path) -> dict:
    """How onnxruntime runs a file after its optimizations: Convs left in float vs integer (QLinearConv) kernels."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    return {"float_conv": ops.count("Conv"), "qlinear_conv": ops.count("QLinearConv"),
            "float_add": ops.count("Add"), "transpose": ops.count("Transpose"),
            "quantize_dequantize": ops.count("QuantizeLinear") + ops.count("DequantizeLinear")}


def mobilenet(folder: Path, threads: list[int], rounds: int) -> dict:
    x = sample_crops(1, seed=1)
    siblings = {name: "onnx fp32" for name in ONNX_VARIANTS} | {"tflite-int8": "tflite"}
    by_threads = {}
    for count in threads:
        runners = {name: onnx_runner(folder / file, count, **options) for name, (file, options) in
                   ONNX_VARIANTS.items()}
        runners["tflite"] = litert_runner(folder / "model.tflite", count)
        runners["tflite-int8"] = litert_runner(folder / "model.int8.tflite", count)
        by_threads[str(count)] = interleaved(runners, x, rounds, siblings)
    files = {name: file for name, (file, _) in ONNX_VARIANTS.items()} | {"tflite": "model.tflite",
                                                                        "tflite-int8": "model.int8.tflite"}
    return {"model": f"keras.applications.MobileNetV2({SIZE}x{SIZE}x3, weights=None, classes=10)",
            "calibration": f"{CALIBRATION} crops of scikit-learn's sample photographs", "rounds": rounds,
            "threads": by_threads, "files": {name: file for name, (file, _) in ONNX_VARIANTS.items()},
            "size_mb": {name: (folder / file).stat().st_size / 1e6 for name, file in files.items()},
            "structure": {file: float_convs(folder / file) for file in dict.fromkeys(
                file for file, _ in ONNX_VARIANTS.values())},
            "report": worst_rows(folder)}


def worst_rows(folder: Path, count: int = 5) -> dict:
    """The quantization report on the shipped recipe's two int8 files, 16 crops it was not calibrated on."""
    from edgecnn.export.quantize import layer_errors

    inputs = sample_crops(16, seed=2)
    keep = ("layer", "op", "kind", "sqnr_db", "fp32_sqnr_db", "max_abs_error")
    return {file: [{k: r[k] for k in keep} for r in layer_errors(folder / file, folder / fp32, inputs)[:count]]
            for file, fp32 in (("u8s8.onnx", "model.onnx"), ("model.int8.tflite", "model.tflite"))}


# --- the committed exports -----------------------------------------------------------------------------------------

def calibration_inputs(manifest) -> np.ndarray:
    """What ``edgecnn export`` calibrates on: 200 training examples picked with seed 0 (ExportAdapter's rule)."""
    from edgecnn.evaluate import INPUT_BUILDERS
    from edgecnn.train.datasets import load_dataset

    dataset = manifest["dataset"]
    x = load_dataset(dataset["name"], seed=dataset.get("seed", 0), **dataset.get("options", {})).x_train
    pick = np.sort(np.random.default_rng(0).choice(len(x), size=min(200, len(x)), replace=False))
    return INPUT_BUILDERS[manifest.task](manifest, [x[i] for i in pick] if isinstance(x, list) else x[pick])


def gate(task: str, measured: dict, fp32: dict) -> bool:
    """The export's int8 gate (export/tasks.py, detection.py), with the fp32 file standing in for Keras (they agree
    within 1e-4): top-1 agreement >= 98 %, or mAP@0.5 at most 2 pts below."""
    if task == "object-detection":
        return fp32["map50"] - measured["map50"] <= 0.02
    return measured["agreement"] >= 0.98


def with_file(folder: Path, fmt: str, path: Path, scratch: Path):
    """A copy of the export ``folder`` in ``scratch`` whose ``fmt`` file is ``path`` (manifest entry rehashed)."""
    from edgecnn import manifest as manifest_io

    copy = scratch / folder.name
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("samples"))
    data = json.loads((copy / "edgecnn.json").read_text())
    entry = data["files"][fmt]
    shutil.copyfile(path, copy / entry["path"])
    data["files"][fmt] = manifest_io.file_entry(copy, entry["path"], **{
        k: v for k, v in entry.items() if k not in ("path", "size", "sha256")})
    (copy / "edgecnn.json").write_text(json.dumps(data))
    return manifest_io.read(copy)


def committed(folder: Path, threads: list[int], rounds: int) -> dict:
    from edgecnn import manifest as manifest_io
    from edgecnn.evaluate import heldout, measure, run_batched
    from edgecnn.export.onnx import quantize_onnx
    from edgecnn.runtime.tasks import TASK_CLASSES

    manifest = manifest_io.read(folder)
    inputs, targets = heldout(manifest)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        requantized = quantize_onnx(folder / "model.onnx", scratch / "model.int8.onnx", manifest["input"]["name"],
                                    calibration_inputs(manifest))
        reference = run_batched(TASK_CLASSES[manifest.task](manifest, format="onnx"), inputs)
        fp32 = measure(manifest, "onnx", inputs, targets, reference)
        now = measure(with_file(folder, "onnx-int8", requantized, scratch), "onnx-int8", inputs, targets, reference)
        before = measure(manifest, "onnx-int8", inputs, targets, reference)
        x = inputs[:1]
        runners_for = {
            "onnx": lambda n: onnx_runner(folder / "model.onnx", n),
            "onnx-int8 committed (S8S8)": lambda n: onnx_runner(folder / "model.int8.onnx", n),
            "onnx-int8 re-quantized (U8S8)": lambda n: onnx_runner(requantized, n),
            "tflite": lambda n: litert_runner(folder / "model.tflite", n),
            "tflite-int8": lambda n: litert_runner(folder / "model.int8.tflite", n),
        }
        siblings = {"onnx-int8 committed (S8S8)": "onnx", "onnx-int8 re-quantized (U8S8)": "onnx",
                    "tflite-int8": "tflite"}
        timed = {str(n): interleaved({k: make(n) for k, make in runners_for.items()}, x, rounds, siblings)
                 for n in threads}
        return {"task": manifest.task, "threads": timed,
                "structure": {"committed": float_convs(folder / "model.int8.onnx"),
                              "re-quantized": float_convs(requantized)},
                "accuracy": {"onnx": fp32, "committed": before, "re-quantized": now,
                             "re-quantized_passes_gate": gate(manifest.task, now, fp32)},
                "size": {"committed": (folder / "model.int8.onnx").stat().st_size,
                         "re-quantized": requantized.stat().st_size}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts, each timed separately")
    parser.add_argument("--no-exports", action="store_true", help="MobileNetV2 only")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the child: build into this folder
    args = parser.parse_args()
    if args.build:
        build(args.build)
        return
    threads = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([sys.executable, __file__, "--build", scratch], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        result = {"mobilenetv2": mobilenet(Path(scratch), threads, args.rounds), "exports": {}}
    if not args.no_exports:
        for manifest in sorted((ROOT / "exported").glob("*/edgecnn.json")):
            result["exports"][manifest.parent.name] = committed(manifest.parent, threads, max(args.rounds // 2, 50))
    result["load"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
