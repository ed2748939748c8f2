"""In process: what edgecnn's task classes add on top of the raw runtimes, on the identical preprocessed tensor.

For each format of the export, the same float32 batch goes to

* ``ImageClassifier.predict`` (the task's preprocessed-input path: backend, (de)quantization, probabilities), and
* the raw runtime a user would write by hand: ``InferenceSession.run`` for ``.onnx``; for ``.tflite``,
  ``Interpreter.set_tensor`` / ``invoke`` / ``get_tensor`` (with the int8 (de)quantization done in numpy, since the
  caller must do it too).

Both sides run with the runtime's default threads, one call each in turn (ours, raw, raw, ours, ...) so that load
from other processes hits both alike; the ratio is of the medians of single-call times. ``classify`` on an
undecoded uint8 array (preprocessing, inference and top-k ranking) is reported beside it, for scale.

Usage: python benchmarks/in_process.py [--model DIR] [--rounds 1000] [--batches 1,64]. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def raw_onnx(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def raw_litert(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = target["quantization"]
    shape = [None]

    def run(x):
        if x.shape != shape[0]:
            interpreter.resize_tensor_input(source["index"], list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        if in_scale:
            x = np.clip(np.rint(x / in_scale) + in_zero, -128, 127).astype(source["dtype"])
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(target["index"])
        return (y.astype(np.float32) - out_zero) * np.float32(out_scale) if out_scale else y

    return run


def compare(contenders: dict, x: np.ndarray, rounds: int) -> dict:
    """Median microseconds per call for each contender; calls alternate (a, b, b, a, a, b, ...) after a warm-up."""
    names = list(contenders)
    clock = time.perf_counter
    for name in names:
        for _ in range(max(5, rounds // 20)):
            contenders[name](x)
    samples = {name: [] for name in names}
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            fn = contenders[name]
            start = clock()
            fn(x)
            samples[name].append((clock() - start) * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "exported" / "digits-cnn"))
    parser.add_argument("--rounds", type=int, default=1000, help="calls per side at batch 1 (a tenth at larger)")
    parser.add_argument("--batches", default="1,64")
    args = parser.parse_args()

    import edgecnn
    from edgecnn import manifest as manifest_io

    manifest = manifest_io.read(args.model)
    if manifest.task != "image-classification":
        raise SystemExit(f"{args.model} is a {manifest.task} model; this comparison is for image classifiers")
    sample = min((Path(args.model) / "samples").glob("*.png"))
    results = {}
    for fmt in manifest.formats:
        ours = edgecnn.ImageClassifier(manifest, format=fmt)
        path = manifest.file_path(fmt)
        raw = raw_onnx(path) if fmt.startswith("onnx") else raw_litert(path)
        one = ours.preprocess(str(sample))
        check = np.abs(ours.predict(one) - raw(one)[0]).max()
        if check > 1e-6:
            raise SystemExit(f"{fmt}: edgecnn and the raw runtime disagree by {check}; not comparing")
        rows = {}
        for size in (int(b) for b in args.batches.split(",")):
            x = np.ascontiguousarray(np.repeat(one, size, axis=0))
            medians = compare({"edgecnn": ours.predict, "raw": lambda batch, raw=raw: raw(batch)[0]}, x,
                              args.rounds if size == 1 else max(10, args.rounds // 10))
            rows[str(size)] = {"edgecnn_us": medians["edgecnn"], "raw_us": medians["raw"],
                               "ratio": medians["edgecnn"] / medians["raw"]}
        pixels = np.asarray(edgecnn.runtime.image.open_image(str(sample)))
        classify = compare({"classify": lambda a, ours=ours: ours.classify(a, top_k=3)}, pixels, args.rounds // 4)["classify"]
        results[fmt] = {"batches": rows, "classify_uint8_us": classify,
                        "runtime": "onnxruntime InferenceSession.run" if fmt.startswith("onnx")
                        else "LiteRT Interpreter set_tensor/invoke/get_tensor"}
    print(json.dumps({"model": str(manifest.folder), "rounds": args.rounds, "results": results}))


if __name__ == "__main__":
    main()
