"""Where the bytes of each ``model.int8.tflite`` go, against ``model.onnx``: weights, quantization parameters, rest.

int8 weights are a quarter of float32 ones, but a full-integer TFLite file also stores, for every quantized tensor,
its scales (float32) and zero points (int64) — one pair per output channel for per-channel weights; edgecnn writes
each distinct array once since issue 17 — plus the flatbuffer's graph, tensor names and signature. For a small model with many thin layers that overhead is a large
share of the file, which is why the file ratio can stay well under the 4× of the weights. Reads the flatbuffer with
the schema that ships with ai-edge-litert (or TensorFlow).

Usage: python benchmarks/tflite_size.py [EXPORT_DIR ...] (default: every export in exported/). Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def breakdown(path: Path) -> dict:
    """Bytes of ``path`` by part: ``buffers`` (weights, biases, metadata), ``quantization_params`` (scales and zero
    points as stored: an array that several tensors share, as edgecnn writes them, counts once), tensor ``names``,
    and ``structure`` (the graph and everything else)."""
    fb = schema()
    data = path.read_bytes()
    root = fb.Model.GetRootAsModel(data, 0)
    origin = np.frombuffer(data, np.uint8).ctypes.data
    buffers = sum(root.Buffers(i).DataLength() for i in range(root.BuffersLength()))
    stored: dict[int, int] = {}  # where an array starts in the file -> its bytes
    names = tensors = 0
    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            tensors += 1
            names += len(tensor.Name() or b"")
            q = tensor.Quantization()
            if q is None:
                continue
            for array in (q.ScaleAsNumpy(), q.ZeroPointAsNumpy(), q.MinAsNumpy(), q.MaxAsNumpy()):
                if isinstance(array, np.ndarray) and array.size:
                    stored[array.ctypes.data - origin] = array.nbytes
    quantization = sum(stored.values())
    return {"file": len(data), "buffers": buffers, "quantization_params": quantization, "names": names,
            "structure": len(data) - buffers - quantization - names, "tensors": tensors}


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:]] or sorted(p.parent for p in (ROOT / "exported").glob("*/edgecnn.json"))
    results = {}
    for folder in folders:
        manifest = json.loads((folder / "edgecnn.json").read_text())
        files = manifest["files"]
        if "tflite-int8" not in files or "onnx" not in files:
            continue
        row = breakdown(folder / files["tflite-int8"]["path"])
        onnx = (folder / files["onnx"]["path"]).stat().st_size
        row.update(onnx=onnx, ratio_file=onnx / row["file"], ratio_weights=onnx / row["buffers"])
        results[folder.name] = row
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
