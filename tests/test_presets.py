"""The preprocessing contract: each preset, applied by the runtime, is what Keras' own preprocess_input does.

A model fed the wrong preprocessing passes every parity test and is wrong on every image, so each preset is proven
against keras.applications itself: first the runtime's map on pixels, then end to end (export with --preprocess,
``edgecnn infer`` on a PNG against the Keras model on ``preprocess_input`` of the same image).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecnn import manifest as manifest_io
from edgecnn.errors import EdgecnnError, ModelError
from edgecnn.presets import PRESETS, preprocessing_fields, recognise_model
from edgecnn.runtime.image import pixels_to_input

from .conftest import run_cli
from .keras_builders import image_folder, image_pixels, labels_file, randomise

#: preset -> the keras.applications module whose preprocess_input defines it (unit: x / 255, no family has it)
FAMILY_OF = {"raw": "efficientnet", "tf": "mobilenet_v2", "torch": "densenet", "caffe": "resnet50", "unit": None}


def keras_preprocess(preset: str, pixels: np.ndarray) -> np.ndarray:
    """Keras' own answer for ``pixels`` (N x H x W x 3, 0..255 float) under ``preset``."""
    from edgecnn.keras_io import import_tensorflow

    import_tensorflow()
    import keras

    if FAMILY_OF[preset] is None:
        return np.asarray(keras.layers.Rescaling(1.0 / 255.0)(pixels))
    module = getattr(keras.applications, FAMILY_OF[preset])
    return np.asarray(module.preprocess_input(pixels.copy()))


def test_presets_cover_every_keras_mode():
    assert set(FAMILY_OF) == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_runtime_preprocessing_equals_keras_preprocess_input(preset):
    pixels = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    ours = pixels_to_input(pixels, preprocessing_fields(preset))
    theirs = keras_preprocess(preset, pixels.astype(np.float32))
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-5)


def test_old_scalar_manifests_are_unchanged():
    pixels = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    old = {"scale": 1 / 255, "offset": 0.0}
    np.testing.assert_array_equal(pixels_to_input(pixels, old), pixels.astype(np.float32) * np.float32(1 / 255))


def test_caffe_on_a_grayscale_model_is_refused_in_one_line():
    with pytest.raises(EdgecnnError, match="grayscale"):
        preprocessing_fields("caffe", channels=1)


def test_mean_and_std_give_per_channel_scale_and_offset():
    fields = preprocessing_fields(None, mean=[10, 20, 30], std=[2, 4, 5])
    pixels = np.full((1, 1, 1, 3), 50, np.uint8)
    np.testing.assert_allclose(pixels_to_input(pixels, fields)[0, 0, 0], [(50 - 10) / 2, (50 - 20) / 4, 4.0])
    assert fields["preset"] == "custom"


def _manifest(digits_export, **prep):
    data = json.loads((digits_export / "edgecnn.json").read_text())
    data["preprocessing"].update(prep)
    return data


def test_manifest_accepts_per_channel_values_and_bgr(digits_export):
    manifest_io.validate(_manifest(digits_export, scale=1.0, offset=[-100.0, -110.0, -120.0], channels_order="bgr",
                                   preset="caffe", preset_reason="given with --preprocess"))


@pytest.mark.parametrize("prep, field", [
    ({"offset": [-1.0, -2.0]}, "preprocessing.offset"),  # digits take 1 channel
    ({"scale": [float("nan")]}, "preprocessing.scale"),
    ({"scale": [0.0]}, "preprocessing.scale"),
    ({"channels_order": "brg"}, "preprocessing.channels_order"),
    ({"preset": 3}, "preprocessing.preset"),
])
def test_manifest_refuses_bad_preprocessing(digits_export, prep, field):
    with pytest.raises(ModelError, match=field.replace(".", r"\.")):
        manifest_io.validate(_manifest(digits_export, **prep))


class _Named:
    def __init__(self, name, layers=()):
        self.name, self.layers = name, list(layers)


def test_a_model_taking_uint8_pixels_gets_them_raw_and_refuses_any_scaling():
    """Scaled pixels cast to uint8 inside the model would be rounded to 0 or 1: a silently blind model."""
    from types import SimpleNamespace

    from edgecnn.errors import InputError
    from edgecnn.presets import choose_preprocessing

    model = SimpleNamespace(name="u8", inputs=[SimpleNamespace(dtype="uint8")], layers=[])
    fields = choose_preprocessing(model, 3)
    assert fields["preset"] == "raw" and fields["scale"] == 1.0 and fields["offset"] == 0.0
    assert "uint8" in fields["preset_reason"]
    for given in ({"preset": "tf"}, {"mean": [127.5]}):
        with pytest.raises(InputError, match="takes uint8 pixels"):
            choose_preprocessing(model, 3, **given)
    floats = SimpleNamespace(name="f", inputs=[SimpleNamespace(dtype="float32")], layers=[])
    assert choose_preprocessing(floats, 3)["preset"] == "unit"


def test_a_backbone_nested_in_the_users_model_is_recognised():
    model = _Named("functional", [_Named("input_layer"), _Named("mobilenetv2_1.00_96", [_Named("conv")])])
    preset, reason = recognise_model(model)
    assert preset == "tf" and "MobileNetV2" in reason and "mobilenetv2_1.00_96" in reason
    assert recognise_model(_Named("my_model", [_Named("dense")])) is None


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_infer_equals_keras_on_preprocess_input(preset, tmp_path):
    """Export a small model with --preprocess PRESET; edgecnn infer on a PNG gives what Keras gives on the same
    image run through keras.applications.<family>.preprocess_input."""
    from edgecnn.export import export_model
    from edgecnn.keras_io import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="tanh"),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")], name="small")
    randomise(model, seed=4)
    model_path = tmp_path / "small.keras"
    model.save(model_path)
    classes = ["a", "b", "c"]
    folder = image_folder(tmp_path / "calibration", classes, (12, 12))
    export_model(model_path, tmp_path / "out", formats=["onnx"], labels=str(labels_file(tmp_path / "l.txt", classes)),
                 calibration=str(folder), preprocessing={"preset": preset})
    image = folder / "b" / "0.png"
    result = run_cli("infer", str(image), "--model", str(tmp_path / "out"), "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    scores = {p["label"]: p["score"] for p in json.loads(result.stdout)["predictions"]}
    expected = model.predict(keras_preprocess(preset, image_pixels(image, 3)), verbose=0)[0]
    np.testing.assert_allclose([scores[c] for c in classes], expected, atol=1e-5)
    manifest = json.loads((tmp_path / "out" / "edgecnn.json").read_text())
    assert manifest["preprocessing"]["preset"] == preset
    assert manifest["preprocessing"]["preset_reason"] == "given with --preprocess"
