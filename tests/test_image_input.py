"""Images of every mode, size and orientation reach the model as the manifest says; bad files are one-line errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import edgecnn
from edgecnn.errors import InputError
from edgecnn.runtime import image as image_io

PREP = {"height": 28, "width": 28, "color_mode": "L", "scale": 1 / 255, "resize": "bilinear", "background": 0}


@pytest.fixture(scope="module")
def classifier(digits_export):
    return edgecnn.load(digits_export)


@pytest.fixture(scope="module")
def sample(digits_export):
    path = min((digits_export / "samples").glob("7-*.png"))
    return Image.open(path).convert("L")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_pillow_mode_classifies_like_the_grayscale_original(classifier, sample, mode):
    pixels = np.asarray(sample)
    if mode == "I;16":
        converted = Image.fromarray(pixels.astype(np.uint16) * 257)
    elif mode == "I":
        converted = Image.fromarray(pixels.astype(np.int32) * 257)
    elif mode == "F":
        converted = Image.fromarray(pixels.astype(np.float32) / 255.0)
    elif mode == "1":
        converted = sample.point(lambda v: 255 if v > 100 else 0).convert("1")
    else:
        converted = sample.convert(mode)
    buffer = io.BytesIO()
    converted.save(buffer, format="TIFF" if mode in ("I;16", "I", "F", "CMYK") else "PNG")
    result = classifier.classify(buffer.getvalue())
    assert result.label == "7", f"{mode}: {result}"


def test_large_colour_image_is_resized_to_the_model_input(classifier, sample):
    big = sample.convert("RGB").resize((300, 300), Image.Resampling.BICUBIC)
    assert classifier.preprocess(big).shape == (1, 28, 28, 1)
    assert classifier.classify(big).label == "7"


def test_exif_orientation_is_applied(sample):
    rotated = sample.rotate(90, expand=True)  # stored turned 90° counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: turn 90° clockwise to view
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif, quality=100)
    upright = np.asarray(image_io.to_mode(image_io.open_image(buffer.getvalue()), "L"), dtype=np.int16)
    original = np.asarray(sample, dtype=np.int16)
    assert upright.shape == original.shape
    straight = np.abs(upright - original).mean()
    unrotated = np.abs(np.asarray(rotated, dtype=np.int16) - original).mean()
    assert straight < 8 < unrotated


def test_transparency_is_flattened_onto_the_manifest_background():
    rgba = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    assert np.asarray(image_io.to_mode(rgba, "L", background=0)).max() == 0
    assert np.asarray(image_io.to_mode(rgba, "L", background=255)).min() == 255


def test_sixteen_bit_values_are_scaled_not_clipped():
    ramp = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(image_io.to_mode(ramp, "L")).tolist() == [[0, 128, 255]]


def test_batch_classification_matches_single_calls(classifier, digits_export):
    paths = sorted((digits_export / "samples").glob("*.png"))
    batch = classifier.classify_batch(paths, batch_size=7)
    singles = [classifier.classify(p) for p in paths]
    assert [r.label for r in batch] == [r.label for r in singles]
    assert np.allclose([r.score for r in batch], [r.score for r in singles], atol=1e-5)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"this is plain text, not a picture", "not an image"),
])
def test_unreadable_files_raise_input_error(tmp_path, content, message):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        image_io.open_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_raise_input_error(tmp_path, sample, fmt):
    buffer = io.BytesIO()
    sample.resize((200, 200)).save(buffer, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InputError, match="truncated|decoded"):
        image_io.open_image(path)


def test_images_over_the_pixel_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    path = tmp_path / "bomb.png"
    Image.new("L", (150, 100)).save(path)  # 15,000 pixels: between 1x and 2x the limit, where Pillow only warns
    with pytest.raises(InputError, match="safety limit"):
        image_io.open_image(path)
