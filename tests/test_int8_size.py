"""How small the int8 TFLite file is against model.onnx (issue 17, item 5), and that making it small changes no number.

The committed detector's model.int8.tflite was only 2.74x smaller than its model.onnx: per-channel weights carry a
float32 scale and an int64 zero point per output channel, twice (weights and bias), each written again for every
tensor, and the converter names fused ops by every TensorFlow op in them. edgecnn writes the file again with shared
quantization arrays and short tensor names (edgecnn/export/tflite.py: compact, pack_model). These tests build a
detector of the committed architecture (untrained: size does not depend on training) and convert it as export
does, keeping the converter's own bytes beside edgecnn's to compare.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecnn.runtime.backends import import_litert_interpreter

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow

SHAPE = (128, 128, 3)  # the committed detector's recipe (Makefile DETECTOR_RECIPE): digit-scenes, 10 digits
DETECTOR = {"alpha": 1.25, "stride": 4, "layout": "mobilenet-s"}
#: the committed detector's manifest sections, for the TFLite Model Metadata every exported file carries
SECTIONS = {"task": "object-detection", "labels": [str(d) for d in range(10)],
            "input": {"name": "image", "shape": [None, *SHAPE], "dtype": "float32", "layout": "NHWC"},
            "outputs": [{"name": "boxes", "kind": "raw-ltrb", "shape": [None, 32, 32, 4]},
                        {"name": "scores", "kind": "probabilities", "shape": [None, 32, 32, 10]}],
            "preprocessing": {"type": "image", "height": 128, "width": 128, "color_mode": "RGB", "channels": 3,
                              "scale": 1 / 255, "offset": 0.0, "resize": "bilinear", "layout": "NHWC"}}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """{name: (converter's bytes, written path)} for fp32, int8 (per-channel, per-tensor) and dynamic-range
    files of one detector, with metadata as export writes them, plus its ONNX file; calibrated on random images."""
    from edgecnn.export import tflite
    from edgecnn.export.onnx import export_onnx
    from edgecnn.keras_io import import_tensorflow
    from edgecnn.train.detection_models import detector

    tf = import_tensorflow()
    model = detector(SHAPE, 10, **DETECTOR)
    rng = np.random.default_rng(0)
    for weight in model.weights:  # as after training: no zero biases or unit BN statistics for the converter to
        low = 0.5 if weight.path.endswith(("gamma", "moving_variance")) else -0.5  # fold away or share
        weight.assign(rng.uniform(low, low + 1.0, weight.shape).astype("float32"))
    serve = tf.function(lambda image: dict(model(image, training=False)),
                        input_signature=[tf.TensorSpec((None, *SHAPE), tf.float32, name="image")])
    calibration = np.random.default_rng(0).random((8, *SHAPE), dtype=np.float32)
    folder = tmp_path_factory.mktemp("int8-size")
    made: dict = {"onnx": (None, export_onnx(serve, folder / "model.onnx"))}
    raw: list[bytes] = []
    real = tflite.compact

    def keeping(data: bytes) -> bytes:
        raw.append(data)
        return real(data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite, "compact", keeping)
        for name, options in {"fp32": {}, "int8": {"int8": True}, "int8-per-tensor": {"int8": True, "per_channel": False},
                              "dynamic": {"weights": "int8"}}.items():
            if "int8" in options:
                options["calibration"] = calibration
            path = tflite.export_tflite(serve, model, folder / f"{name}.tflite",
                                        metadata={"sections": SECTIONS, "name": "detector"}, **options)
            made[name] = (raw[-1], path)
    return made


def _ratio(files, name: str) -> float:
    return files["onnx"][1].stat().st_size / files[name][1].stat().st_size


def test_per_tensor_int8_detector_is_at_least_3_5x_smaller_than_onnx(files):
    """The issue's target; the per-tensor file export wrote before was 3.41x (this detector, trained 1 epoch)."""
    assert _ratio(files, "int8-per-tensor") >= 3.5


def test_per_channel_int8_detector_loses_the_repeated_zero_points(files):
    """Per-channel (the default) cannot reach 3.5x without losing numbers: its weights and biases alone, with one
    float32 scale per channel each, leave too little room for the graph. The converter's file was 2.71x."""
    assert _ratio(files, "int8") >= 3.1
    assert len(files["int8"][1].read_bytes()) < 0.9 * len(files["int8"][0])


def _model(data: bytes):
    from ai_edge_litert import schema_py_generated as fb

    return fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))


@pytest.mark.parametrize("name", ["fp32", "int8", "int8-per-tensor", "dynamic"])
def test_written_file_has_the_converters_numbers_and_aligned_buffers(files, name):
    from edgecnn.export.tflite import short_name

    raw, path = files[name]
    written = path.read_bytes()
    before, after = _model(raw), _model(written)
    assert [bytes(np.asarray(b.data, np.uint8)) if b.data is not None else b"" for b in after.buffers][
        :len(before.buffers)] == [bytes(np.asarray(b.data, np.uint8)) if b.data is not None else b""
                                  for b in before.buffers]  # then the metadata's own buffer
    for old_graph, new_graph in zip(before.subgraphs, after.subgraphs, strict=True):
        keep = set(old_graph.inputs) | set(old_graph.outputs)
        for index, (old, new) in enumerate(zip(old_graph.tensors, new_graph.tensors, strict=True)):
            assert new.name.decode() == (old.name.decode() if index in keep else short_name(old.name.decode()))
            assert (old.quantization is None) == (new.quantization is None)
            if old.quantization is not None:
                for field in ("scale", "zeroPoint", "min", "max", "quantizedDimension"):
                    assert np.array_equal(np.asarray(getattr(old.quantization, field)),
                                          np.asarray(getattr(new.quantization, field))), (index, field)
    names = [t.name for t in after.subgraphs[0].tensors]
    assert len(names) == len(set(names)), "short names must stay unique"
    origin = np.frombuffer(written, np.uint8).ctypes.data
    from ai_edge_litert import schema_py_generated as fb

    root = fb.Model.GetRootAsModel(written, 0)
    offsets = [root.Buffers(i).DataAsNumpy().ctypes.data - origin for i in range(root.BuffersLength())
               if root.Buffers(i).DataLength()]
    assert offsets and all(offset % 16 == 0 for offset in offsets)
    outputs = []
    for data in (raw, written):
        runner = import_litert_interpreter()(model_content=data).get_signature_runner()
        (key, detail), = runner.get_input_details().items()
        image = np.random.default_rng(1).random((1, *SHAPE), dtype=np.float32)
        if np.dtype(detail["dtype"]).kind == "i":
            scale, zero_point = detail["quantization"]
            image = np.clip(np.rint(image / scale) + zero_point, -128, 127).astype(detail["dtype"])
        outputs.append(runner(**{key: image}))
    assert outputs[0].keys() == outputs[1].keys()
    for key in outputs[0]:
        assert np.array_equal(outputs[0][key], outputs[1][key]), key


@pytest.mark.parametrize("name", ["int8", "dynamic"])
def test_quantize_report_matches_every_tensor_it_matched_before(files, tmp_path, name):
    """The report matches the int8 and fp32 files tensor by tensor by name: as many rows with short names as with
    the converter's, and a file written with long names still matches one written with short ones."""
    from edgecnn.export.quantize import layer_errors

    inputs = np.random.default_rng(2).random((2, *SHAPE), dtype=np.float32)
    paths = {}
    for key in (name, "fp32"):
        paths[key] = tmp_path / f"{key}.raw.tflite"
        paths[key].write_bytes(files[key][0])
    long_names = layer_errors(paths[name], paths["fp32"], inputs)
    short = layer_errors(files[name][1], files["fp32"][1], inputs)
    mixed = layer_errors(files[name][1], paths["fp32"], inputs)
    from ai_edge_litert import schema_py_generated as fb

    model = _model(files[name][0])  # every int8 weight tensor has its row (tflite-dynamic leaves small ones float)
    weights = [t for t in model.subgraphs[0].tensors if t.type == fb.TensorType.INT8 and t.buffer
               and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data)]
    assert sum(r["kind"] == "weight" for r in long_names) == len(weights) > 0
    assert len(short) == len(long_names) == len(mixed)
    assert sorted(r["sqnr_db"] for r in short) == pytest.approx(sorted(r["sqnr_db"] for r in long_names))
