"""What makes each ``model.int8.tflite`` >= 3.5x smaller than ``model.onnx``, and at what accuracy.

``tflite_size.py`` says where the bytes go; this rewrites each file's flatbuffer as edgecnn's writer or another
converter setting would have written it, and measures size and accuracy of the result through edgecnn's own runtime
and the export gates:

- ``repacked``: the file read and written back unchanged by the object API (flatbuffers' own layout), the baseline;
- ``per-tensor weights``: every per-channel weight tensor requantized to one scale (the largest of its channels)
  and its int32 bias to match (input scale x that scale) - what ``converter._experimental_disable_per_channel``
  (``--per-tensor``) gives, up to one extra rounding: one scale and zero point per tensor instead of per channel;
- ``edgecnn's writer``: what export writes since issue 17 (``edgecnn.export.tflite.compact``): each distinct
  quantization array stored once (the per-channel zero points are all 0), tensor names cut to the first fused
  op plus a hash, buffers 16-byte aligned; the same numbers, so the same accuracy;
- both.

Usage: python benchmarks/int8_size.py [EXPORT_DIR ...] (default: every export in exported/). Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from int8_speed import gate, with_file  # benchmarks/ is not a package: found through sys.path above
from tflite_size import breakdown, schema

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def per_tensor(model, fb) -> None:
    """Requantize per-channel weights (and their biases) to one scale per tensor, in place."""
    codes = {getattr(fb.BuiltinOperator, name): name for name in WEIGHTED_OPS}
    for graph in model.subgraphs:
        for op in graph.operators:
            if model.operatorCodes[op.opcodeIndex].builtinCode not in codes or len(op.inputs) < 2:
                continue
            weights = graph.tensors[op.inputs[1]]
            q = weights.quantization
            if q is None or q.scale is None or len(q.scale) < 2:
                continue
            scales = np.asarray(q.scale, np.float64)
            shape = [1] * len(weights.shape)
            shape[q.quantizedDimension] = len(scales)
            ratio = (scales / scales.max()).reshape(shape)
            values = _buffer(model, weights, np.int8)
            _store(model, weights, np.clip(np.rint(values * ratio), -127, 127).astype(np.int8))
            q.scale, q.zeroPoint, q.quantizedDimension = [float(scales.max())], [0], 0
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                bias = graph.tensors[op.inputs[2]]
                values = _buffer(model, bias, np.int32)
                _store(model, bias, np.rint(values * ratio.reshape(-1)).astype(np.int32))
                bias.quantization.scale = [float(np.max(bias.quantization.scale))]
                bias.quantization.zeroPoint, bias.quantization.quantizedDimension = [0], 0


def _buffer(model, tensor, dtype) -> np.ndarray:
    return np.frombuffer(np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes(), dtype).reshape(
        tensor.shape).astype(np.float64)


def _store(model, tensor, values: np.ndarray) -> None:
    model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)


def rewrite(path: Path, target: Path, *edits, compact: bool = False) -> Path:
    """``path`` with ``edits`` applied, packed by the object API or (``compact``) by edgecnn's writer; the
    associated files (labels.txt, zipped onto the end) are appended again as export appends them."""
    import io
    import zipfile

    import flatbuffers

    from edgecnn.export import tflite

    fb = schema()
    data = path.read_bytes()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))
    for edit in edits:
        edit(model, fb)
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = io.BytesIO(tflite.compact(bytes(builder.Output())) if compact else bytes(builder.Output()))
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "a") as archive:
            for name in source.namelist():
                archive.writestr(name, source.read(name))
    target.write_bytes(out.getvalue())
    return target


def export_variants(folder: Path) -> dict:
    from edgecnn import manifest as manifest_io
    from edgecnn.evaluate import heldout, measure, run_batched
    from edgecnn.runtime.tasks import TASK_CLASSES

    manifest = manifest_io.read(folder)
    inputs, targets = heldout(manifest)
    onnx_bytes = (folder / "model.onnx").stat().st_size
    reference = run_batched(TASK_CLASSES[manifest.task](manifest, format="tflite"), inputs)
    fp32 = measure(manifest, "tflite", inputs, targets, reference)
    source = folder / "model.int8.tflite"
    rows = {"committed": {**breakdown(source), **measure(manifest, "tflite-int8", inputs, targets, reference)}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name, edits, compact in (("repacked", (), False), ("per-tensor weights", (per_tensor,), False),
                                     ("edgecnn's writer", (), True),
                                     ("per-tensor weights + edgecnn's writer", (per_tensor,), True)):
            path = rewrite(source, scratch / "variant.tflite", *edits, compact=compact)
            rows[name] = {**breakdown(path), **measure(with_file(folder, "tflite-int8", path, scratch / "copy"),
                                                       "tflite-int8", inputs, targets, reference)}
    for row in rows.values():
        row["ratio"] = onnx_bytes / row["file"]
        row["passes_gate"] = gate(manifest.task, row, fp32)
    return {"task": manifest.task, "onnx": onnx_bytes, "fp32": fp32, "variants": rows}


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:]] or sorted(p.parent for p in (ROOT / "exported").glob("*/edgecnn.json"))
    print(json.dumps({"results": {folder.name: export_variants(folder) for folder in folders}}))


if __name__ == "__main__":
    main()
