"""Train -> export -> validate end to end on digits, short: the pipeline works, refuses, and never half-writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecnn import manifest as manifest_io
from edgecnn.errors import ExportRefusedError

from .conftest import error_lines, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from edgecnn.train.fit import train

    out = tmp_path_factory.mktemp("run")
    metrics = train("digits", "seed-cnn", out, epochs=3, seed=1, verbose=0)
    return out, metrics


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from edgecnn.export import export_model

    run, _ = trained
    out = tmp_path_factory.mktemp("exports") / "digits"
    data = export_model(run / "model.keras", out, calibration_size=64, thresholds={"min_agreement": 0.9})
    return out, data


def test_training_writes_the_run_folder(trained):
    run, metrics = trained
    for name in ("model.keras", "history.json", "history.png", "confusion.png", "metrics.json", "run.json"):
        assert (run / name).is_file(), name
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]


def test_export_writes_every_validated_format_and_a_manifest(exported):
    out, data = exported
    manifest = manifest_io.read(out)
    assert manifest.formats == ["onnx", "onnx-int8", "tflite", "tflite-int8", "tflite-fp16", "tflite-dynamic"]
    for fmt in manifest.formats:
        manifest.verify_file(fmt)
    results = data["validation"]["results"]
    assert results["onnx"]["max_abs_diff"] <= 1e-4 and results["tflite"]["max_abs_diff"] <= 1e-4
    assert results["tflite-int8"]["agreement"] >= 0.9
    quant = manifest["files"]["tflite-int8"]["quantization"]
    assert quant["inputs"]["image"]["dtype"] == "int8" and quant["outputs"]["probabilities"]["dtype"] == "int8"
    samples = sorted(p.name for p in (out / "samples").iterdir())
    assert {name.split("-")[0] for name in samples} == set(manifest.labels)
    assert not list(out.parent.glob(".digits.tmp-*"))


def test_onnx_file_carries_names_dynamic_batch_and_metadata(exported):
    import onnx

    out, _ = exported
    model = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgecnn.task"] == "image-classification" and json.loads(meta["edgecnn.labels"])[3] == "3"


def test_a_refused_export_keeps_the_previous_one(trained, exported):
    from edgecnn.export import export_model

    run, _ = trained
    out, _ = exported
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ExportRefusedError, match="agreement"):
        export_model(run / "model.keras", out, formats=["tflite-int8"], calibration_size=16,
                     thresholds={"min_agreement": 1.01})
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list(out.parent.glob(".digits.tmp-*"))


def test_cli_refusal_is_one_line_and_exit_2(trained, tmp_path):
    run, _ = trained
    result = run_cli("export", str(run / "model.keras"), "--out", str(tmp_path / "x"), "--formats", "onnx",
                     "--max-diff", "-1")
    assert result.returncode == 2 and len(error_lines(result)) == 1 and "refused" in error_lines(result)[0]
    assert not (tmp_path / "x").exists()


def test_any_keras_classifier_exports_with_labels_and_calibration(tmp_path):
    import keras

    import edgecnn
    from edgecnn.export import export_model

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))  # logits, not softmax
    model.save(tmp_path / "foreign.keras")
    (tmp_path / "labels.txt").write_text("\n".join(f"digit {i}" for i in range(10)))
    data = export_model(tmp_path / "foreign.keras", tmp_path / "out", formats=["onnx", "tflite"],
                        labels=str(tmp_path / "labels.txt"), calibration="digits", calibration_size=16)
    assert data["outputs"][0]["kind"] == "logits"
    result = edgecnn.load(tmp_path / "out").classify(np.zeros((28, 28), np.uint8), top_k=10)
    assert result.label.startswith("digit ")
    assert abs(sum(c.score for c in result.categories) - 1) < 1e-4  # the runtime applied the softmax
