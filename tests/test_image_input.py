"""Images of every mode, size and orientation reach the model as the manifest says; bad files are one-line errors."""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
import zlib
from pathlib import Path

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
    assert classifier.preprocess(big).shape == (1, 28, 28, classifier.manifest["preprocessing"]["channels"])
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


def test_exif_orientation_is_applied_on_a_pillow_without_in_place(sample, monkeypatch):
    """Debian bookworm's Pillow 9.4 (the 32-bit Pi's) has exif_transpose without ``in_place``."""
    from PIL import ImageOps

    modern = ImageOps.exif_transpose
    monkeypatch.setattr(ImageOps, "exif_transpose", lambda image: modern(image))
    test_exif_orientation_is_applied(sample)


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


# --- Issue 14: every fuzzed file and every odd array is an InputError one-liner or works; never a bare exception
# and never a warning. The files are built here, from Pillow and raw bytes.

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(after_ihdr: bytes = b"", ihdr: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    head = data[:8] + (_chunk(b"IHDR", ihdr) if ihdr is not None else data[8:33])
    return head + after_ihdr + data[33:]


_BOMB = zlib.compress(b"A" * 4_000_000, 9)  # 4 MB of text in ~4 KB: over Pillow's 1 MB MAX_TEXT_CHUNK


def _tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    return buffer.getvalue()


def _float_tiff_with_infinities() -> bytes:
    pixels = np.zeros((8, 8), np.float32)
    pixels[0, 0], pixels[1, 1] = np.inf, -np.inf
    return _tiff(Image.fromarray(pixels))


FUZZED_FILES = {
    "png-ztxt-bomb": lambda: _png(_chunk(b"zTXt", b"comment\x00\x00" + _BOMB)),
    "png-itxt-bomb": lambda: _png(_chunk(b"iTXt", b"comment\x00\x01\x00\x00\x00" + _BOMB)),
    "png-iccp-bomb": lambda: _png(_chunk(b"iCCP", b"profile\x00\x00" + _BOMB)),
    "png-truncated-ihdr": lambda: _png(ihdr=b"\x00\x00\x00\x08\x00"),
    "ppm-maxval-0": lambda: b"P5\n2 2\n0\n\x00\x00\x00\x00",
    "ppm-maxval-70000": lambda: b"P5\n2 2\n70000\n" + b"\x00" * 8,
    "ppm-garbage-width": lambda: b"P6\n2\xc3 2\n255\n" + b"\x00" * 12,
    "sgi-unsupported-mode": lambda: b"\x01\xda\x01\x01\x00\x05" + b"\x00" * 506,
    "dds-unknown-pixel-format": lambda: (b"DDS |\x00\x00\x00" + struct.pack("<IIII", 0x1007, 4, 4, 0) + b"\x00" * 52
                                         + struct.pack("<II", 32, 0x100) + b"\x00" * 44),
    "float-tiff-with-infinities": _float_tiff_with_infinities,
}


@pytest.mark.parametrize("name", sorted(FUZZED_FILES))
def test_fuzzed_file_is_one_input_error_and_no_warning(name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as raised:
            image_io.load_pixels(FUZZED_FILES[name](), PREP)
    assert "\n" not in str(raised.value) and str(raised.value).startswith("<bytes>"), raised.value
    assert [str(w.message) for w in caught] == []


def test_text_chunk_bomb_is_named_as_such(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(FUZZED_FILES["png-ztxt-bomb"]())
    with pytest.raises(InputError, match=r"bomb\.png.*(text|metadata)"):
        image_io.open_image(path)


def test_lab_tiff_is_converted_like_its_rgb_twin():
    rgb = Image.effect_noise((16, 16), 80).convert("RGB")
    lab = rgb.convert("LAB")
    expected = np.asarray(lab.convert("RGB").convert("L"), dtype=np.int16)
    pixels, size = image_io.load_pixels(_tiff(lab), {**PREP, "width": 16, "height": 16})
    assert size == (16, 16)
    assert np.abs(pixels[:, :, 0].astype(np.int16) - expected).max() <= 1


def test_lazily_opened_pil_image_with_a_bomb_is_an_input_error():
    data = _png()
    bomb_after_pixels = data[:-12] + _chunk(b"zTXt", b"comment\x00\x00" + _BOMB) + data[-12:]
    image = Image.open(io.BytesIO(bomb_after_pixels))  # not loaded yet: the bomb goes off in load()
    with pytest.raises(InputError):
        image_io.load_pixels(image, PREP)


@pytest.mark.parametrize("array", [
    np.zeros((28, 28, 1), np.uint8), np.zeros((28, 28, 3), np.uint8), np.zeros((28, 28, 4), np.uint8),
    np.zeros((28, 28, 2), np.uint8), np.zeros((28, 28), bool), np.zeros((28, 28), np.int16),
    np.zeros((28, 28), np.uint16), np.zeros((28, 28), np.float32), np.zeros((28, 28, 1), np.float64),
    np.zeros((5, 40, 3), np.int32), np.zeros((1, 1), np.float16),
], ids=lambda a: f"{'x'.join(map(str, a.shape))}-{a.dtype}")
def test_every_ordinary_array_shape_and_dtype_is_accepted(classifier, array):
    assert classifier.preprocess(array).shape == (1, 28, 28, classifier.manifest["preprocessing"]["channels"])


def test_single_channel_array_classifies_like_the_plain_one(classifier, sample):
    pixels = np.asarray(sample)
    flat, channel = classifier.classify(pixels), classifier.classify(pixels[:, :, None])
    assert channel.label == flat.label == "7" and abs(channel.score - flat.score) < 1e-6


def test_bool_array_is_black_and_white_not_black_and_nearly_black():
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    pixels, _ = image_io.load_pixels(mask, {**PREP, "width": 4, "height": 4, "resize": "nearest"})
    assert sorted(np.unique(pixels).tolist()) == [0, 255]


@pytest.mark.parametrize("source, message", [
    (np.array(3, np.uint8), "shape"),
    (np.zeros((0, 0), np.uint8), "empty|0x0|no pixels"),
    (np.zeros((28, 0, 3), np.uint8), "empty|no pixels"),
    (np.zeros((1, 28, 28, 1), np.uint8), "shape"),
    (np.zeros((28, 28, 5), np.uint8), "shape|channels"),
    (np.full((4, 4), np.inf), "NaN|infinite"),
    (np.full((4, 4), np.nan, np.float32), "NaN|infinite"),
    (np.zeros((4, 4), complex), "complex|dtype"),
    (np.array([["a", "b"]]), "dtype"),
    (np.array([[None, 1]], dtype=object), "dtype"),
    (None, "NoneType"),
    (42, "int"),
    ([[0, 255], [255, 0]], "list"),
], ids=["0-d", "0x0", "28x0x3", "batch-of-one", "5-channels", "inf", "nan", "complex", "str", "object", "None", "int",
        "list"])
def test_unusable_array_or_object_is_one_input_error(classifier, source, message):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match=message):
            classifier.classify(source)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "missing.png",
    lambda tmp: tmp / "missing-dir" / "x.png",
    lambda tmp: str(tmp / "nul\x00byte.png"),
    lambda tmp: tmp / ("x" * 300 + ".png"),
    lambda tmp: Path("/dev/zero"),
], ids=["missing", "missing-parent", "nul-in-name", "name-too-long", "device"])
def test_unusable_paths_are_one_input_error(tmp_path, make):
    with pytest.raises(InputError):
        image_io.open_image(make(tmp_path))


def test_decoding_in_many_threads_leaves_the_warning_filters_as_they_were():
    """Pillow's warnings are silenced while decoding without catch_warnings(), which is not thread-safe: threads
    decoding at once must neither leak a warning nor leave a filter behind."""
    import threading

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="TIFF")
    data = buffer.getvalue()
    corrupt_exif = data[:12]  # cut inside its first IFD: "Corrupt EXIF data" warnings from TiffImagePlugin
    before = list(warnings.filters)
    errors: list[BaseException] = []

    def decode():
        try:
            for _ in range(200):
                with contextlib.suppress(InputError):
                    image_io.load_pixels(corrupt_exif, PREP)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inside = list(warnings.filters)
        threads = [threading.Thread(target=decode) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert list(warnings.filters) == inside
    assert not errors and [str(w.message) for w in caught] == []
    assert list(warnings.filters) == before
