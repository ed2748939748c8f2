"""The ONNX int8 recipe (export/onnx.py quantize_onnx): every Conv must become an integer kernel in onnxruntime.

With int8 activations (S8S8) onnxruntime on x86-64 left part of the graph float between QuantizeLinear and
DequantizeLinear (14 of the committed detector's 27 Convs), which made int8 slower than fp32; the speed itself is
measured in benchmarks/int8_speed.py, this test checks the structure that causes it.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
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


def _scales(path: Path) -> tuple[dict, dict]:
    """(activation tensor -> its QuantizeLinear scale, weight -> the size of its DequantizeLinear scale)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    activations = {n.input[0]: float(constants[n.input[1]].reshape(-1)[0]) for n in graph.node
                   if n.op_type == "QuantizeLinear" and n.input[0] not in constants}
    weights = {n.input[0]: constants[n.input[1]].size for n in graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in constants and constants[n.input[0]].ndim > 1}
    return activations, weights


@pytest.fixture(scope="module")
def digits_inputs():
    from edgecnn import manifest as manifest_io
    from edgecnn.evaluate import heldout

    manifest = manifest_io.read(DIGITS)
    inputs, _ = heldout(manifest)
    return manifest["input"]["name"], inputs


@pytest.fixture(scope="module")
def minmax_scales(digits_inputs, tmp_path_factory):
    from edgecnn.export.onnx import quantize_onnx

    name, inputs = digits_inputs
    return _scales(quantize_onnx(DIGITS / "model.onnx", tmp_path_factory.mktemp("minmax") / "model.int8.onnx",
                                 name, inputs[:40]))[0]


@pytest.mark.parametrize("method,per_channel", [("minmax", True), ("entropy", True), ("percentile", True),
                                                ("minmax", False)])
def test_each_onnx_recipe_gives_a_file_that_agrees_and_is_what_it_says(tmp_path, capsys, digits_inputs,
                                                                        minmax_scales, method, per_channel):
    import onnxruntime as ort

    from edgecnn.export.onnx import quantize_onnx

    name, inputs = digits_inputs  # 40: not a whole number of batches, which the histogram calibrators broke on
    int8 = quantize_onnx(DIGITS / "model.onnx", tmp_path / "model.int8.onnx", name, inputs[:40],
                         calibration_method=method, per_channel=per_channel)
    assert capsys.readouterr().out == ""  # onnxruntime's calibrators print; `edgecnn export --json` owns stdout
    fp32 = ort.InferenceSession(str(DIGITS / "model.onnx")).run(None, {name: inputs})[0]
    ours = ort.InferenceSession(str(int8)).run(None, {name: inputs})[0]
    assert (ours.argmax(1) == fp32.argmax(1)).mean() >= 0.95
    activations, weights = _scales(int8)
    reference = minmax_scales
    assert weights and all((size > 1) == per_channel for size in weights.values()), weights
    differ = [t for t in activations if t in reference and not np.isclose(activations[t], reference[t])]
    assert bool(differ) == (method != "minmax"), differ  # entropy and percentile choose other ranges


def test_recipe_entry_names_each_choice():
    from edgecnn.export.onnx import onnx_int8_recipe

    assert onnx_int8_recipe()["method"] == ("static QDQ, uint8 activations, per-channel int8 weights, MinMax "
                                           "calibration")
    recipe = onnx_int8_recipe("percentile", per_channel=False)
    assert recipe["calibration_method"] == "percentile" and recipe["weights"] == "per-tensor"
    assert "per-tensor" in recipe["method"] and "Percentile" in recipe["method"]


@pytest.mark.slow
def test_export_records_the_chosen_onnx_recipe(tmp_path, digits_keras):
    from edgecnn import manifest as manifest_io
    from edgecnn.export import export_model

    export_model(digits_keras, tmp_path / "out", formats=["onnx-int8"],
                 calibration_size=64, calibration_method="percentile", per_channel=False)
    quantization = manifest_io.read(tmp_path / "out")["files"]["onnx-int8"]["quantization"]
    assert quantization["calibration_method"] == "percentile" and quantization["weights"] == "per-tensor"
    assert quantization["calibration_examples"] == 64
    assert "Percentile calibration" in quantization["method"]
    _, weights = _scales(tmp_path / "out" / "model.int8.onnx")
    assert weights and all(size == 1 for size in weights.values())
