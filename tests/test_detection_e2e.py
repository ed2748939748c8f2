"""Detection end to end, short: train a tiny detector, export all four formats, detect, draw and eval via the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edgecnn import manifest as manifest_io

from .conftest import error_lines, run_cli

pytestmark = pytest.mark.slow

TINY = {"train": 64, "val": 8, "test": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from edgecnn.train.fit import train

    out = tmp_path_factory.mktemp("det-run")
    metrics = train("digit-scenes", "detector", out, epochs=2, seed=2, batch_size=16, verbose=0,
                    dataset_options=TINY, model_options={"alpha": 0.5, "head_width": 32})
    return out, metrics


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from edgecnn.export import export_model

    run, _ = trained
    out = tmp_path_factory.mktemp("det-exports") / "detector"
    # An untrained detector finds little; the int8 rule (mAP drop) is relaxed so the pipeline itself is tested.
    data = export_model(run / "model.keras", out, calibration_size=16, thresholds={"max_map_drop": 1.0})
    return out, data


def test_training_writes_map_metrics_and_the_detection_section(trained):
    run, metrics = trained
    for name in ("model.keras", "history.json", "metrics.json", "run.json"):
        assert (run / name).is_file(), name
    assert 0.0 <= metrics["test_map50"] <= 1.0 and 0.0 <= metrics["test_map"] <= metrics["test_map50"]
    info = json.loads((run / "run.json").read_text())
    section = info["detection"]
    assert section["stride"] * section["grid"][0] == section["input_size"][1] == 128
    # Precise batch norm ran over every one of the 64 training scenes (4 batches of 16).
    assert info["batch_norm"] == "precise: moving statistics = mean over 4 training batches"
    assert set(section["outputs"]) == {"boxes", "scores"}


def test_export_validates_raw_outputs_and_writes_scenes_with_coco_truth(exported):
    out, data = exported
    manifest = manifest_io.read(out)
    assert manifest.formats == ["onnx", "onnx-int8", "tflite", "tflite-int8", "tflite-fp16", "tflite-dynamic"]
    assert [o["name"] for o in manifest["outputs"]] == ["boxes", "scores"]
    results = data["validation"]["results"]
    assert results["onnx"]["max_abs_diff"] <= 1e-4 and results["tflite"]["max_abs_diff"] <= 1e-4
    for fmt in manifest.formats:
        assert set(results[fmt]) >= {"map50", "map", "agreement", "max_abs_diff"}
    quant = manifest["files"]["tflite-int8"]["quantization"]["outputs"]
    assert set(quant) == {"boxes", "scores"} and quant["boxes"]["scale"] != quant["scores"]["scale"]
    truth = json.loads((out / "samples" / "ground_truth.json").read_text())
    names = sorted(p.name for p in (out / "samples").glob("*.png"))
    assert sorted(i["file_name"] for i in truth["images"]) == names and truth["annotations"]


def test_every_format_gives_the_same_kind_of_result(exported):
    from edgecnn import ObjectDetector

    out, _ = exported
    scene = min((out / "samples").glob("*.png"))
    for fmt in ("onnx", "onnx-int8", "tflite", "tflite-int8"):
        result = ObjectDetector(out, format=fmt).detect(scene, threshold=0.01)
        for det in result.detections:
            x0, y0, x1, y1 = det.box
            assert 0 <= x0 <= x1 <= 128 and 0 <= y0 <= y1 <= 128 and det.label in [str(i) for i in range(10)]


def test_cli_infer_json_and_save_on_a_large_non_square_image(exported, tmp_path):
    out, _ = exported
    big = tmp_path / "big.jpg"
    Image.fromarray(np.asarray(Image.open(min((out / "samples").glob("*.png"))).resize((600, 300)))).save(big)
    result = run_cli("infer", str(big), "--model", str(out), "--json", "--threshold", "0.01",
                     "--save", str(tmp_path / "drawn.png"))
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["input"] == str(big) and isinstance(line["detections"], list)
    for det in line["detections"]:
        assert set(det) == {"label", "score", "box"} and det["box"][2] <= 600 and det["box"][3] <= 300
    assert Image.open(tmp_path / "drawn.png").size == (600, 300)


def test_cli_infer_several_inputs_saves_into_a_folder_and_reports_bad_ones(exported, tmp_path):
    out, _ = exported
    samples = sorted((out / "samples").glob("*.png"))[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(samples[0].read_bytes()[:100])
    result = run_cli("infer", *map(str, samples), str(broken), "--model", str(out), "--json",
                     "--save", str(tmp_path / "drawn"))
    assert result.returncode == 2
    assert len([ln for ln in result.stdout.splitlines() if ln.startswith("{")]) == 2
    assert len(error_lines(result)) == 1 and "broken.png" in error_lines(result)[0]
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted(p.name for p in samples)


def test_cli_eval_reports_map_per_format(exported):
    out, _ = exported
    result = run_cli("eval", str(out), "--formats", "onnx,tflite-int8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "object-detection"
    for fmt in ("onnx", "tflite-int8"):
        assert 0.0 <= report["results"][fmt]["map50"] <= 1.0 and "map" in report["results"][fmt]
