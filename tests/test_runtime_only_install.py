"""`pip install .` alone gives a working `edgecnn infer` with no TensorFlow anywhere in the environment."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_runtime_only_venv_labels_the_image_and_text_samples(tmp_path, digits_export):
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
