"""`edgecnn quantize-report`: per-layer quantization error of the committed int8 files, worst first, and a damaged
layer found first."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXPORTED, error_lines, run_cli

pytest.importorskip("onnx")
EXPORTS = ["digits-cnn", "bbc-news", "digit-detector"]
EXAMPLES = 8  # a few held-out examples are enough to rank layers; the CLI's default is 64


@pytest.fixture(scope="module")
def reports():
    from edgecnn.export.quantize import quantization_report

    cache = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = quantization_report(EXPORTED / name, examples=EXAMPLES)
        return cache[name]

    return get


@pytest.mark.parametrize("name", EXPORTS)
def test_report_has_ranked_finite_rows_for_every_int8_file(reports, name):
    from edgecnn import manifest as manifest_io
    from edgecnn.export.quantize import FP32_SIBLING

    report = reports(name)
    manifest = manifest_io.read(EXPORTED / name)
    assert set(report["files"]) == {f for f in manifest.formats if f.endswith("-int8") or f == "tflite-dynamic"}
    assert set(report["files"]) <= set(FP32_SIBLING)
    assert report["examples"] == EXAMPLES
    for fmt, data in report["files"].items():
        rows = data["layers"]
        assert rows, fmt
        assert all(math.isfinite(r["sqnr_db"]) for r in rows), fmt
        assert all(r["fp32_sqnr_db"] is None or math.isfinite(r["fp32_sqnr_db"]) for r in rows), fmt
        assert all(r["max_abs_error"] is None or r["max_abs_error"] >= 0 for r in rows), fmt
        own = [r["sqnr_db"] for r in rows]
        assert own == sorted(own), f"{fmt}: not worst first"
        assert {r["kind"] for r in rows} >= {"activation", "weight"}, fmt


@pytest.mark.parametrize("name", EXPORTS)
def test_every_quantized_compute_layer_has_a_row(reports, name):
    """Each int8 Conv/Gemm/MatMul node (ONNX) and CONV/FULLY_CONNECTED op (TFLite) is named by some row."""
    import onnx

    files = reports(name)["files"]
    graph = onnx.load(str(EXPORTED / name / "model.int8.onnx")).graph
    quantized = {n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
                 and any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    assert quantized and quantized <= {r["layer"] for r in files["onnx-int8"]["layers"]}
    compute = {name for name, op in _tflite_op_outputs(EXPORTED / name / "model.int8.tflite").items()
               if op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")}
    assert compute and compute <= {r["layer"] for r in files["tflite-int8"]["layers"]}


def test_worst_layers_are_unique_names_without_the_input(reports):
    from edgecnn.export.quantize import worst_layers

    rows = reports("digits-cnn")["files"]["onnx-int8"]["layers"]
    names = worst_layers(rows)
    assert len(names) == len(set(names))
    assert names[0] == next(r["layer"] for r in rows if r["kind"] != "input")
    assert "image" not in names and worst_layers(rows, 2) == names[:2]


# --- a deliberately damaged layer comes first ----------------------------------------------------------------------

def _copy_export(tmp_path: Path, name: str = "digits-cnn") -> Path:
    target = tmp_path / name
    shutil.copytree(EXPORTED / name, target, ignore=shutil.ignore_patterns("samples"))
    return target


def _rehash(folder: Path, fmt: str) -> None:
    from edgecnn import manifest as manifest_io

    data = json.loads((folder / "edgecnn.json").read_text())
    entry = data["files"][fmt]
    data["files"][fmt] = manifest_io.file_entry(folder, entry["path"], **{
        k: v for k, v in entry.items() if k not in ("path", "size", "sha256")})
    (folder / "edgecnn.json").write_text(json.dumps(data))


def _damage_onnx(folder: Path, kind: str, factor: float = 16.0) -> str:
    """Multiply one scale in model.int8.onnx; return the node that owns the damaged tensor."""
    import onnx
    from onnx import numpy_helper

    path = folder / "model.int8.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    dense = next(n for n in graph.node if n.op_type in ("Gemm", "MatMul"))  # the hidden dense layer
    if kind == "weight":
        dequantize = producers[dense.input[1]]
        scale_name, owner = dequantize.input[1], dense.name
    else:  # its output activation, whose scale no other tensor shares
        quantize = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == dense.output[0])
        scale_name, owner = quantize.input[1], dense.name
    users = [n for n in graph.node if scale_name in n.input]
    assert {u.op_type for u in users} <= {"QuantizeLinear", "DequantizeLinear"}
    assert len({u.input[0].removesuffix("_QuantizeLinear_Output") for u in users}) <= 2
    initializer = next(i for i in graph.initializer if i.name == scale_name)
    initializer.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(initializer) * np.float32(factor),
                                                 scale_name))
    onnx.save(model, str(path))
    _rehash(folder, "onnx-int8")
    return owner


def _tflite_op_outputs(path: Path) -> dict[str, str]:
    """Output tensor name -> op name of every op of a .tflite file."""
    from edgecnn.runtime.backends import import_litert_interpreter

    interpreter = import_litert_interpreter()(model_path=str(path))
    details = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    return {details[int(op["outputs"][0])]: op["op_name"] for op in interpreter._get_ops_details()}


def _damage_tflite(folder: Path, kind: str, factor: float = 16.0, fmt: str = "tflite-int8") -> str:
    """Multiply one tensor's scales in the ``fmt`` file (flatbuffer rewritten); return the layer (op output)."""
    from edgecnn.export import FORMAT_FILES

    flatbuffers = pytest.importorskip("flatbuffers")
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema

    path = folder / FORMAT_FILES[fmt]
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    graph = model.subgraphs[0]
    ops = {graph.tensors[op.outputs[0]].name.decode(): op for op in graph.operators
           if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED}
    layer = next(iter(ops))  # the hidden dense layer, as in _damage_onnx
    op = ops[layer]
    tensor = graph.tensors[op.inputs[1] if kind == "weight" else op.outputs[0]]
    tensor.quantization.scale = [s * factor for s in tensor.quantization.scale]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    _rehash(folder, fmt)
    return layer


@pytest.mark.parametrize("kind", ["weight", "activation"])
@pytest.mark.parametrize("fmt", ["onnx-int8", "tflite-int8"])
def test_a_damaged_layer_is_ranked_first(tmp_path, fmt, kind):
    from edgecnn.export.quantize import quantization_report, worst_layers

    folder = _copy_export(tmp_path)
    damaged = (_damage_onnx if fmt == "onnx-int8" else _damage_tflite)(folder, kind)
    rows = quantization_report(folder, formats=[fmt], examples=EXAMPLES)["files"][fmt]["layers"]
    assert worst_layers(rows, 1) == [damaged], rows[:3]
    assert rows[0]["kind"] == kind
    healthy = quantization_report(EXPORTED / "digits-cnn", formats=[fmt], examples=EXAMPLES)["files"][fmt]["layers"]
    before = next(r["sqnr_db"] for r in healthy if r["layer"] == damaged and r["kind"] == kind)
    assert rows[0]["sqnr_db"] < before - 10  # x16 on a scale costs 4 bits: ~24 dB


def test_dynamic_range_file_is_reported_and_a_damaged_weight_ranked_first(tmp_path):
    """tflite-dynamic: int8 weights with their own error, float activations against fp32 (no stored grid)."""
    from edgecnn.export.quantize import quantization_report, worst_layers

    healthy = quantization_report(EXPORTED / "digits-cnn", formats=["tflite-dynamic"], examples=EXAMPLES)
    data = healthy["files"]["tflite-dynamic"]
    assert (data["file"], data["reference"]) == ("model.dynamic.tflite", "model.tflite")
    rows = data["layers"]
    assert {r["kind"] for r in rows} == {"weight", "activation"}
    assert all(r["sqnr_db"] == r["fp32_sqnr_db"] for r in rows if r["kind"] == "activation")
    assert all(math.isfinite(r["sqnr_db"]) for r in rows)
    folder = _copy_export(tmp_path)
    damaged = _damage_tflite(folder, "weight", fmt="tflite-dynamic")
    rows = quantization_report(folder, formats=["tflite-dynamic"], examples=EXAMPLES)["files"]["tflite-dynamic"]
    assert worst_layers(rows["layers"], 1) == [damaged]  # its output (the error vs fp32) or its weight first

    def weight(layers):
        return next(r["sqnr_db"] for r in layers if r["layer"] == damaged and r["kind"] == "weight")

    assert weight(rows["layers"]) < weight(data["layers"]) - 10  # x16 on a scale costs 4 bits: ~24 dB


def test_cli_prints_a_table_json_and_a_plot(tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "report.png"
    result = run_cli("quantize-report", str(EXPORTED / "digits-cnn"), "--examples", "4", "--top", "3",
                     "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    assert "model.int8.onnx vs model.onnx" in result.stdout and "model.int8.tflite vs model.tflite" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = run_cli("quantize-report", str(EXPORTED / "digits-cnn"), "--examples", "4", "--formats", "tflite-int8",
                     "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.splitlines()[-1])
    assert list(data["files"]) == ["tflite-int8"] and data["files"]["tflite-int8"]["layers"]


def test_cli_refuses_a_float_format_in_one_line(tmp_path):
    result = run_cli("quantize-report", str(EXPORTED / "digits-cnn"), "--formats", "onnx")
    assert result.returncode == 2
    assert error_lines(result) and "not an int8 format" in error_lines(result)[0]
