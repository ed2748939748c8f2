"""Train -> export -> eval for text, short: the token-id graph exports to all four formats and validates."""

from __future__ import annotations

import json

import pytest

from edgecnn import manifest as manifest_io

from .conftest import run_cli

pytestmark = pytest.mark.slow

SMALL = {"vocab_size": 2000, "sequence_length": 64, "embedding_dim": 16, "filters": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from edgecnn.train.fit import train

    out = tmp_path_factory.mktemp("text-run")
    metrics = train("bbc-news", "text-cnn-multi", out, epochs=3, seed=1, verbose=0, learning_rate=3e-3,
                    model_options=SMALL)
    return out, metrics


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from edgecnn.export import export_model

    run, _ = trained
    out = tmp_path_factory.mktemp("text-exports") / "bbc"
    data = export_model(run / "model.keras", out, calibration_size=64, samples_per_class=1,
                        thresholds={"min_agreement": 0.9})
    return out, data


def test_training_records_tokenizer_parity_and_the_tfidf_line(trained):
    run, metrics = trained
    assert metrics["tokenizer_parity"] == 1.0
    assert metrics["sequence_length"] == 64 and metrics["vocabulary_size"] == 2000
    assert 0.9 < metrics["tfidf_reference"]["accuracy"] <= 1.0 and metrics["tfidf_reference"]["n"] == 445
    section = json.loads((run / "run.json").read_text())["text"]
    assert section["vocabulary"][:2] == ["", "[UNK]"] and section["sequence_length"] == 64


def test_export_keeps_int32_tokens_and_validates(exported):
    out, data = exported
    manifest = manifest_io.read(out)
    assert manifest.formats == ["onnx", "onnx-int8", "tflite", "tflite-int8", "tflite-fp16", "tflite-dynamic"]
    assert manifest["input"] == {**manifest["input"], "name": "tokens", "dtype": "int32", "shape": [None, 64]}
    quant = manifest["files"]["tflite-int8"]["quantization"]
    assert quant["inputs"]["tokens"]["dtype"] == "int32"
    assert quant["outputs"]["probabilities"]["dtype"] == "int8"
    results = data["validation"]["results"]
    assert results["onnx"]["agreement"] == 1.0 and results["onnx"]["max_abs_diff"] <= 1e-4
    assert results["tflite-int8"]["agreement"] >= 0.9
    samples = sorted((out / "samples").glob("*.txt"))
    assert {p.name.rsplit("-", 1)[0] for p in samples} <= set(manifest.labels) and samples


def test_eval_json_adds_the_tfidf_reference_line(exported):
    out, _ = exported
    result = run_cli("eval", str(out), "--json", "--formats", "onnx,tflite-int8")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert set(report["results"]) == {"onnx", "tflite-int8"} and report["n"] == 445
    assert 0.9 < report["tfidf_reference"]["accuracy"] <= 1.0
    table = run_cli("eval", str(out), "--formats", "onnx")
    assert "TF-IDF" in table.stdout
