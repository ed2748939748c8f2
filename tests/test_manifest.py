"""The manifest contract: validation, path confinement, hashes."""

from __future__ import annotations

import json

import pytest

from edgecnn import manifest as manifest_io
from edgecnn.errors import ModelError


def minimal(**changes) -> dict:
    """The smallest manifest an image classifier can run from (every field the runtime reads, no more)."""
    data = {"schema": 1, "task": "image-classification", "labels": ["a", "b"],
            "input": {"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32"},
            "outputs": [{"name": "probabilities"}],
            "preprocessing": {"width": 8, "height": 8, "color_mode": "L"},
            "files": {"onnx": {"path": "model.onnx"}}}
    data.update(changes)
    return data


def test_round_trip(tmp_path):
    manifest_io.write(tmp_path, minimal(labels=["a", "b"]))
    loaded = manifest_io.read(tmp_path)
    assert loaded.labels == ["a", "b"] and loaded.formats == ["onnx"] and loaded.folder == tmp_path


@pytest.mark.parametrize("changes, message", [
    ({"schema": 99}, "upgrade"),
    ({"schema": "1"}, "schema"),
    ({"task": "segmentation"}, "unknown task"),
    ({"files": {}}, "no model files"),
    ({"input": None}, "'input'"),
])
def test_invalid_manifests_are_refused(tmp_path, changes, message):
    (tmp_path / "edgecnn.json").write_text(json.dumps(minimal(**changes)))
    with pytest.raises(ModelError, match=message):
        manifest_io.read(tmp_path)


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_paths_may_not_leave_the_export_folder(tmp_path, path):
    (tmp_path / "edgecnn.json").write_text(json.dumps(minimal(files={"onnx": {"path": path}})))
    with pytest.raises(ModelError, match="leaves the export folder"):
        manifest_io.read(tmp_path).file_path("onnx")


def test_verify_file_checks_the_hash(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"abc")
    manifest_io.write(tmp_path, minimal(files={"onnx": manifest_io.file_entry(tmp_path, "model.onnx")}))
    assert manifest_io.read(tmp_path).verify_file("onnx") == (tmp_path / "model.onnx").resolve()
    (tmp_path / "model.onnx").write_bytes(b"abd")
    with pytest.raises(ModelError, match="sha256"):
        manifest_io.read(tmp_path).verify_file("onnx")


def test_not_json(tmp_path):
    (tmp_path / "edgecnn.json").write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        manifest_io.read(tmp_path)
