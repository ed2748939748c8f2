"""--target mobile: batch-1 ORT-format files that edgecnn's runtime opens too, and onnxruntime's mobile verdict.

(The end-to-end export with ``--target mobile`` runs in test_opencv_target.py, one export for both targets.)
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import edgecnn
from edgecnn import manifest as manifest_io
from edgecnn.errors import ModelError
from edgecnn.export.mobile import fix_batch, mobile_usability, to_ort
from edgecnn.runtime.backends import open_backend

from .conftest import EXPORTED


@pytest.fixture(scope="module")
def digits_ort(tmp_path_factory):
    """The committed digits export, copied, with a batch-1 model.ort made from its model.onnx and listed."""
    folder = tmp_path_factory.mktemp("mobile") / "digits-cnn"
    shutil.copytree(EXPORTED / "digits-cnn", folder)
    fixed = fix_batch(folder / "model.onnx", folder / "model.b1.onnx")
    shutil.move(str(to_ort(fixed)), folder / "model.ort")
    fixed.unlink()
    data = manifest_io.read(folder)
    data["files"]["onnx-mobile"] = manifest_io.file_entry(folder, "model.ort", format="onnx-mobile",
                                                          precision="fp32", runtime="onnxruntime", batch=1)
    manifest_io.write(folder, dict(data))
    return folder


def test_the_ort_file_has_batch_one(digits_ort):
    backend = open_backend(digits_ort / "model.ort", "image", ["probabilities"])
    assert backend.input_shape[0] == 1
    assert open_backend(digits_ort / "model.onnx", "image", ["probabilities"]).input_shape[0] is None


def test_runtime_runs_an_ort_file_like_the_onnx_file_batch_by_batch(digits_ort):
    samples = sorted((digits_ort / "samples").glob("*.png"))
    assert len(samples) >= 10
    mobile = edgecnn.load(digits_ort, format="onnx-mobile")
    onnx = edgecnn.load(digits_ort, format="onnx")
    inputs = np.concatenate([onnx.preprocess(path) for path in samples])
    ours, theirs = mobile.predict(inputs), onnx.predict(inputs)  # a batch of 20 through a batch-1 file
    assert ours.shape == theirs.shape == (len(samples), 10)
    assert np.abs(ours - theirs).max() < 1e-5
    assert [r.label for r in mobile.classify_batch(samples)] == [r.label for r in onnx.classify_batch(samples)]


def test_an_unknown_suffix_is_still_refused(tmp_path):
    odd = tmp_path / "model.pt"
    odd.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"expected \.onnx, \.ort or \.tflite"):
        open_backend(odd, "image", ["probabilities"])


def test_fixing_the_batch_is_what_makes_the_digits_model_usable_on_mobile(tmp_path):
    """onnxruntime's own checker: NO for NNAPI and CoreML with the dynamic batch, YES with batch 1."""
    source = EXPORTED / "digits-cnn" / "model.onnx"
    before = mobile_usability(source)
    after = mobile_usability(fix_batch(source, tmp_path / "fixed.onnx"))
    assert set(before) == set(after) and "NNAPI" in after
    assert before["NNAPI"] == "NO" and after["NNAPI"] == "YES"
    assert all(verdict in ("YES", "MAYBE", "NO") for verdict in after.values())
