"""The committed digits export meets issue 2's targets, measured now on its held-out split (no stored numbers)."""

from __future__ import annotations

import json

import pytest

from edgecnn import manifest as manifest_io
from edgecnn.evaluate import evaluate

from .conftest import run_cli


@pytest.fixture(scope="module")
def report(digits_export):
    return evaluate(digits_export)


def test_accuracy_and_parity_targets(report, digits_export):
    results = report["results"]
    assert report["n"] >= 300 and report["split"] == "test"
    assert results["onnx"]["accuracy"] >= 0.98
    assert results["onnx"]["agreement"] == 1.0
    assert abs(results["tflite-int8"]["accuracy"] - results["onnx"]["accuracy"]) <= 0.005
    assert results["tflite-int8"]["agreement"] >= 0.99
    keras = json.loads((digits_export / "edgecnn.json").read_text())["validation"]["results"]
    assert keras["keras"]["accuracy"] >= 0.98 and keras["onnx"]["max_abs_diff"] <= 1e-5


def test_int8_tflite_is_much_smaller_than_fp32_onnx(digits_export):
    manifest = manifest_io.read(digits_export)
    assert manifest["files"]["onnx"]["size"] >= 3 * manifest["files"]["tflite-int8"]["size"]


def test_every_file_matches_its_recorded_hash(digits_export):
    manifest = manifest_io.read(digits_export)
    for fmt in manifest.formats:
        manifest.verify_file(fmt)


@pytest.mark.parametrize("fmt", ["onnx", "tflite-int8"])
def test_cli_labels_every_sample_as_its_name_says(digits_export, fmt):
    result = run_cli("infer", str(digits_export / "samples"), "--model", str(digits_export), "--json",
                     "--format", fmt)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    labels = sorted(manifest_io.read(digits_export).labels)
    assert sorted({line["predictions"][0]["label"] for line in lines}) == labels  # every class has samples
    for line in lines:
        expected = line["input"].rsplit("/", 1)[-1].rsplit("-", 1)[0]
        assert line["predictions"][0]["label"] == expected, line


def test_eval_json_has_the_documented_shape(digits_export):
    result = run_cli("eval", str(digits_export), "--json", "--formats", "onnx,tflite-int8")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"model", "task", "dataset", "split", "n", "results"} <= set(data)
    assert set(data["results"]) == {"onnx", "tflite-int8"}
    assert {"accuracy", "agreement"} <= set(data["results"]["onnx"])
