"""The converter registry export_model walks (edgecnn/export/converters.py): every format has one, they run in the
manifest's order, the fp32 ONNX file is made for onnx-int8, and a converter's crash is a one-line refusal."""

from __future__ import annotations

import pytest

from edgecnn.errors import ExportRefusedError
from edgecnn.export import converters
from edgecnn.manifest import FORMATS


def test_every_format_has_a_converter():
    assert set(converters.CONVERTERS) == set(FORMATS)
    assert set(converters.INT8_FORMATS) | set(converters.WEIGHT_ONLY_TFLITE) <= set(FORMATS)


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    calls: list[str] = []

    def recorder(fmt):
        def convert(job):
            calls.append(fmt)
            return {"precision": fmt}
        return convert

    monkeypatch.setattr(converters, "CONVERTERS", {fmt: recorder(fmt) for fmt in FORMATS})
    job = converters.Conversion(tmp_path, serve=None, model=None, task="image-classification", labels=["a"],
                                input_name="image", calib=[], contexts=[])
    return job, calls


@pytest.mark.parametrize(("formats", "made"), [
    (["tflite", "onnx-int8"], ["onnx", "onnx-int8", "tflite"]),  # onnx-int8 quantizes the fp32 ONNX file
    (["tflite-dynamic", "tflite-fp16", "tflite-int8"], ["tflite-int8", "tflite-fp16", "tflite-dynamic"]),
    (list(FORMATS), list(FORMATS)),
])
def test_converters_run_in_the_manifests_order(recorded, formats, made):
    job, calls = recorded
    files = converters.convert(job, formats)
    assert calls == made
    assert list(files) == made and files[made[0]] == {"precision": made[0]}


def test_a_converter_crash_is_a_refusal_naming_the_format(recorded, monkeypatch):
    job, _ = recorded

    def crash(job):
        raise ValueError("Unsupported op\n  RandomShuffle")

    monkeypatch.setitem(converters.CONVERTERS, "tflite", crash)
    with pytest.raises(ExportRefusedError) as refused:
        converters.convert(job, ["onnx", "tflite"])
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("export refused, tflite: the converter failed on this model (ValueError: "
                              "Unsupported op RandomShuffle)")
    assert message.endswith("export the others with --formats onnx")


def test_make_int8_refuses_a_float_format(tmp_path):
    job = converters.Conversion(tmp_path, None, None, "image-classification", [], "image", [], [])
    with pytest.raises(ValueError, match="not an int8 format"):
        job.make_int8("tflite-fp16")
