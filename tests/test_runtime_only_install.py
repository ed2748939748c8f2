"""`pip install .` alone gives a working `edgecnn infer` with no TensorFlow anywhere in the environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import ROOT, objects_found, sample_truth

pytestmark = pytest.mark.slow


def test_runtime_only_venv_labels_the_image_and_text_samples_and_boxes_the_digits(tmp_path, digits_export):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", str(ROOT)], check=True, capture_output=True, timeout=900)
    listing = ("import importlib.metadata as m, json; "
               "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))")
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", listing], check=True, capture_output=True,
                               text=True)
    names = set(json.loads(installed.stdout))
    assert "onnxruntime" in names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "scikit-learn"}
    result = subprocess.run([str(venv / "bin" / "edgecnn"), "infer", str(digits_export / "samples"), "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) >= 10
    for line in lines:
        assert line["predictions"][0]["label"] == line["input"].rsplit("/", 1)[-1].rsplit("-", 1)[0]
    text_export = ROOT / "exported" / "bbc-news"
    for sample in sorted((text_export / "samples").glob("*.txt")):
        result = subprocess.run([str(venv / "bin" / "edgecnn"), "infer", "--model", str(text_export), "--text-file",
                                 str(sample), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["predictions"][0]["label"] == sample.stem.rsplit("-", 1)[0]

    # Issue 4: the detector's sample scenes, drawn with --save, and >= 90 % of their digits boxed with the right label.
    detector_export = ROOT / "exported" / "digit-detector"
    drawn = tmp_path / "drawn"
    result = subprocess.run([str(venv / "bin" / "edgecnn"), "infer", str(detector_export / "samples"), "--model",
                             str(detector_export), "--json", "--save", str(drawn)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    answers = {Path(line["input"]).name: line["detections"] for line in map(json.loads, result.stdout.splitlines())}
    found = total = 0
    for name, boxes, labels in sample_truth(detector_export):
        detections = answers[name]
        found += objects_found([d["box"] for d in detections], [d["label"] for d in detections], boxes, labels)
        total += len(labels)
        with Image.open(drawn / name) as out, Image.open(detector_export / "samples" / name) as scene:
            assert out.size == scene.size
            assert (not detections) or np.any(np.asarray(out.convert("RGB")) != np.asarray(scene.convert("RGB")))
    assert total >= 30 and found / total >= 0.90, (found, total)
