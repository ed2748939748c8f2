"""Automatic float fallback: an int8 file that fails its gate is re-made with its worst layers kept in float.

The model is the committed digits CNN with one unit of its hidden ``dense`` layer scaled by 1000 and cut off from
the head: Keras' answers do not depend on that unit, but its extreme range sets the int8 grid of the whole
``dense`` output, so the other 63 units round to almost nothing and int8 falls to chance. Keeping the head and the
layer that feeds it in float (``nodes_to_exclude`` for onnxruntime, ``denylisted_nodes`` for TFLite) rescues it;
the convolutions stay int8.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn import manifest as manifest_io
from edgecnn.errors import ExportRefusedError

from .conftest import ROOT, error_lines, run_cli

pytest.importorskip("onnx")
SCALE = 1000.0


RECORD = {"reason": "onnx-int8: top-1 agreement with Keras 8.61% is below 98.00%",
          "nodes": [{"name": "model/probabilities/MatMul", "op": "Gemm", "sqnr_db": 4.3, "why": "rank 1"},
                    {"name": "model/dense/MatMul", "op": "Gemm", "sqnr_db": None, "why": "feeds it"}],
          "attempts": 1, "gate": {"before": {"agreement": 0.0861}, "after": {"agreement": 1.0}}}


@pytest.fixture(scope="module")
def extreme(tmp_path_factory, digits_keras) -> tuple[Path, Path]:
    """(model file, labels file): the digits CNN with one extreme-range hidden unit that no answer depends on."""
    import keras

    from edgecnn.keras_io import load_keras_model
    from edgecnn.train.datasets import load_dataset

    folder = tmp_path_factory.mktemp("extreme")
    model = load_keras_model(digits_keras)
    head = model.get_layer("probabilities")  # the hidden Dense is "dense" or, after other models in this process, "dense_N"
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense) and layer is not head)
    images = load_dataset("digits", seed=0).x_train[:64].astype(np.float32) / 255
    unit = int(keras.Model(model.inputs, dense.output)([images]).numpy().mean(axis=0).argmax())  # a live unit
    weights, bias = (w.copy() for w in dense.get_weights())
    weights[:, unit] *= SCALE
    bias[unit] *= SCALE
    dense.set_weights([weights, bias])
    head_weights, head_bias = (w.copy() for w in head.get_weights())
    head_weights[unit, :] = 0.0
    head.set_weights([head_weights, head_bias])
    model.save(folder / "extreme.keras")
    (folder / "labels.txt").write_text("\n".join(str(i) for i in range(10)))
    return folder / "extreme.keras", folder / "labels.txt"


def _export(extreme, out: Path, fmt: str, fallback: str) -> dict:
    from edgecnn.export import export_model

    model, labels = extreme
    return export_model(model, out, formats=[fmt], labels=str(labels), calibration="digits", calibration_size=64,
                        int8_fallback=fallback)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx-int8", "tflite-int8"])
def test_int8_fallback_off_refuses_and_names_the_worst_layers(extreme, tmp_path, fmt):
    with pytest.raises(ExportRefusedError) as refused:
        _export(extreme, tmp_path / "out", fmt, "off")
    message = str(refused.value)
    assert "\n" not in message
    assert f"{fmt}: top-1 agreement" in message
    assert "probabilities" in message  # the head's input grid is the worst (its bias rounds to nothing)
    assert "edgecnn quantize-report" in message and "--int8-fallback auto" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx-int8", "tflite-int8"])
def test_int8_fallback_auto_keeps_the_extreme_layer_in_float(extreme, tmp_path, fmt):
    data = _export(extreme, tmp_path / "out", fmt, "auto")
    manifest = manifest_io.read(tmp_path / "out")
    assert manifest.formats == [fmt]  # the fp32 sibling made for the ranking is not shipped
    fallback = manifest["files"][fmt]["float_fallback"]
    nodes = [node["name"] for node in fallback["nodes"]]
    assert any("/dense" in name for name in nodes), nodes  # the extreme-range layer...
    assert any("probabilities" in name for name in nodes), nodes  # ...and the head it feeds
    assert not any("conv2d" in name for name in nodes), nodes  # the rest stays int8
    assert all(isinstance(node["sqnr_db"], float) for node in fallback["nodes"])
    before, after = fallback["gate"]["before"], fallback["gate"]["after"]
    assert before["agreement"] < 0.5 and after["agreement"] >= 0.98
    assert after == {k: v for k, v in data["validation"]["results"][fmt].items() if k in after}
    method = manifest["files"][fmt]["quantization"]["method"]  # no longer "full integer"
    assert "full integer" not in method and f"int8 with {len(nodes)} layers kept in float" in method, method
    if fmt == "tflite-int8":  # and the file says so to an app's developer
        from edgecnn.export.metadata import read_metadata

        description = read_metadata(tmp_path / "out" / "model.int8.tflite")[0].description.decode()
        assert description.endswith(f"int8 with {len(nodes)} layers kept in float."), description

    import edgecnn

    sample = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        next((tmp_path / "out" / "samples").iterdir())))
    assert edgecnn.load(tmp_path / "out", format=fmt).classify(sample).label in manifest.labels


@pytest.mark.slow
def test_info_shows_what_stayed_in_float(extreme, tmp_path):
    _export(extreme, tmp_path / "out", "onnx-int8", "auto")
    result = run_cli("info", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "kept in float" in result.stdout and "/dense" in result.stdout
    fallback = json.loads((tmp_path / "out" / "edgecnn.json").read_text())["files"]["onnx-int8"]["float_fallback"]
    assert f"{len(fallback['nodes'])} layer" in result.stdout


@pytest.mark.slow
def test_cli_int8_fallback_off_is_one_error_line(extreme, tmp_path):
    model, labels = extreme
    result = run_cli("export", str(model), "--out", str(tmp_path / "out"), "--formats", "onnx-int8",
                     "--labels", str(labels), "--calibration", "digits", "--calibration-size", "64",
                     "--int8-fallback", "off")
    assert result.returncode == 2, result.stderr
    assert len(error_lines(result)) == 1 and "quantize-report" in error_lines(result)[0]


@pytest.mark.parametrize("damage", [
    lambda record: record.update(nodes=[]),
    lambda record: record["nodes"][0].update(name=7),
    lambda record: record["nodes"][0].update(sqnr_db="low"),
    lambda record: record["gate"]["after"].update(agreement="all"),
])
def test_manifest_refuses_a_damaged_float_fallback_record(damage):
    import copy

    from edgecnn.errors import ModelError

    data = json.loads((ROOT / "exported" / "digits-cnn" / "edgecnn.json").read_text())
    data["files"]["onnx-int8"]["float_fallback"] = copy.deepcopy(RECORD)
    manifest_io.validate(data)  # the record as export writes it passes
    damage(data["files"]["onnx-int8"]["float_fallback"])
    with pytest.raises(ModelError, match="float_fallback"):
        manifest_io.validate(data)


def test_info_text_names_the_float_layers_and_the_gate():
    from edgecnn.report import float_fallback_text

    text = float_fallback_text(RECORD)
    assert text.startswith("2 layers kept in float")
    assert "0.0861" in text and "1.0000" in text
    assert "model/probabilities/MatMul" in text and "model/dense/MatMul" in text


def _fake_job(monkeypatch, passes_with: int | None):
    """An Int8Job over a made-up ranking of 7 layers (layer i fed by f<i>): ``check`` passes once ``passes_with``
    ranked layers are in float (never when None), and every ``remake`` is recorded."""
    from edgecnn.export import fallback, quantize

    rows = [{"layer": f"l{i}", "op": "Conv", "kind": "activation", "sqnr_db": float(10 + i), "tensor": f"t{i}"}
            for i in range(7)]
    monkeypatch.setattr(quantize, "layer_errors", lambda *args, **kwargs: rows)
    monkeypatch.setattr(quantize, "feeding_layers", lambda path: {f"l{i}": [f"f{i}"] for i in range(7)})
    made: list[tuple[str, ...]] = []

    def check():
        ranked = [n for n in made[-1] if n.startswith("l")]
        ok = passes_with is not None and len(ranked) >= passes_with
        return {"agreement": 0.99 if ok else 0.5}, [] if ok else ["onnx-int8: top-1 agreement 50.00% is below 98.00%"]

    job = fallback.Int8Job("onnx-int8", Path("model.int8.onnx"), made.append, check, lambda folder: Path("x"))
    return job, made


def test_fallback_adds_one_ranked_layer_and_its_feeders_per_try_and_keeps_the_first_pass(monkeypatch):
    from edgecnn.export.fallback import rescue

    job, made = _fake_job(monkeypatch, passes_with=2)
    measured, failures, record = rescue(job, {"agreement": 0.4}, ["gate failed"], np.zeros((8, 2)), "auto")
    assert made == [("l0", "f0"), ("l0", "f0", "l1", "f1")]
    assert failures == [] and measured == {"agreement": 0.99}
    assert [n["name"] for n in record["nodes"]] == ["l0", "f0", "l1", "f1"]
    assert record["nodes"][2]["sqnr_db"] == 11.0 and record["nodes"][3]["why"] == "feeds l1"
    assert record["attempts"] == 2 and record["gate"] == {"before": {"agreement": 0.4}, "after": {"agreement": 0.99}}


def test_fallback_stops_at_its_bound_and_says_what_it_tried(monkeypatch):
    from edgecnn.export.fallback import MAX_LAYERS, rescue

    job, made = _fake_job(monkeypatch, passes_with=None)
    _, failures, record = rescue(job, {"agreement": 0.4}, ["gate failed"], np.zeros((8, 2)), "auto")
    assert record is None and len(made) == MAX_LAYERS == 5
    assert failures[0].startswith("gate failed; worst layers by their own SQNR: l0 (10.0 dB), l1 (11.0 dB)")
    assert f"kept the {MAX_LAYERS} worst layer(s) and what feeds them (10 in all) in float and still failed" \
        in failures[0]


def test_fallback_off_only_names_the_worst_layers(monkeypatch):
    from edgecnn.export.fallback import rescue

    job, made = _fake_job(monkeypatch, passes_with=1)
    _, failures, record = rescue(job, {"agreement": 0.4}, ["gate failed"], np.zeros((8, 2)), "off")
    assert made == [] and record is None
    assert "l0 (10.0 dB), l1 (11.0 dB), l2 (12.0 dB);" in failures[0] and "edgecnn quantize-report" in failures[0]
