"""The ONNX int8 recipe (export/onnx.py quantize_onnx): every Conv must become an integer kernel in onnxruntime.

With int8 activations (S8S8) onnxruntime on x86-64 left part of the graph float between QuantizeLinear and
DequantizeLinear (14 of the committed detector's 27 Convs), which made int8 slower than fp32; the speed itself is
measured in benchmarks/int8_speed.py, this test checks the structure that causes it.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "exported" / "digits-cnn"

pytest.importorskip("onnx")
pytest.importorskip("sympy")


def _op_types(path: Path, optimized: bool) -> collections.Counter:
    """Op types of ``path`` as written, or as onnxruntime's CPU provider runs it after its graph optimizations."""
    import onnx
    import onnxruntime as ort

    if optimized:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        path = Path(options.optimized_model_filepath)
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_int8_onnx_runs_every_conv_as_an_integer_kernel(tmp_path):
    from edgecnn import manifest as manifest_io
    from edgecnn.evaluate import heldout
    from edgecnn.export.onnx import quantize_onnx

    manifest = manifest_io.read(DIGITS)
    inputs, _ = heldout(manifest)
    int8 = quantize_onnx(DIGITS / "model.onnx", tmp_path / "model.int8.onnx", manifest["input"]["name"], inputs[:64])
    convs = _op_types(DIGITS / "model.onnx", optimized=False)["Conv"]
    ran = _op_types(int8, optimized=True)
    assert convs > 0
    assert ran["QLinearConv"] == convs and ran["Conv"] == 0, ran
