"""Fuzzing image decoding: whatever the bytes or the array, ``load_pixels`` gives pixels or one InputError.

Hypothesis mutates real files of every format we list (flipped bytes, cuts, insertions, spliced headers) and
builds arrays of every shape and dtype. ``derandomize=True`` fixes the examples (CI sees the same ones every run)
and ``max_examples`` bounds the time: a few seconds each.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from edgecnn.errors import InputError
from edgecnn.runtime import image as image_io

PREP = {"height": 12, "width": 12, "color_mode": "RGB", "scale": 1 / 255, "resize": "bilinear", "background": 0}
#: EDGECNN_FUZZ_EXAMPLES=20000 for a longer hunt on your machine; CI runs the fixed 400.
FUZZ = settings(derandomize=True, database=None, deadline=None,
                max_examples=int(os.environ.get("EDGECNN_FUZZ_EXAMPLES", "400")),
                suppress_health_check=[HealthCheck.too_slow])


def _seed_files() -> dict[str, bytes]:
    """One small real file per format, saved by Pillow: noise, so the compressed streams are not trivial."""
    rgb = Image.effect_noise((20, 14), 50).convert("RGB")
    variants = {
        "png": (rgb, "PNG", {}), "png-palette": (rgb.convert("P"), "PNG", {}), "jpeg": (rgb, "JPEG", {}),
        "jpeg-exif": (rgb, "JPEG", {"exif": _exif()}), "tiff": (rgb, "TIFF", {}),
        "tiff-deflate": (rgb, "TIFF", {"compression": "tiff_deflate"}), "gif": (rgb.convert("P"), "GIF", {}),
        "bmp": (rgb, "BMP", {}), "ppm": (rgb, "PPM", {}), "pgm": (rgb.convert("L"), "PPM", {}),
        "webp": (rgb, "WEBP", {}), "tiff-float": (rgb.convert("F"), "TIFF", {}),
    }
    files = {}
    for name, (image, fmt, options) in variants.items():
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        files[name] = buffer.getvalue()
    return files


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


SEEDS = _seed_files()


@st.composite
def mutated_files(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "header-flip", "cut", "insert", "delete", "splice"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "header-flip" and data:  # headers are where most parsing happens
            data[min(at, 63) % len(data)] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "splice":  # another format's header on this one's body
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            data[:at % 32] = other[:at % 32]
    return bytes(data)


def _loads_or_refuses(source) -> None:
    """The contract: pixels of the model's size, or an InputError on one line; no warning either way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pixels, size = image_io.load_pixels(source, PREP)
        except InputError as exc:
            assert "\n" not in str(exc)
        else:
            assert pixels.shape == (12, 12, 3) and pixels.dtype == np.uint8 and min(size) >= 1
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_every_seed_file_decodes():
    for name, data in SEEDS.items():
        pixels, _ = image_io.load_pixels(data, PREP)
        assert pixels.shape == (12, 12, 3), name


@FUZZ
@given(mutated_files())
def test_mutated_files_decode_or_raise_input_error(data):
    _loads_or_refuses(data)


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.tuples(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"II*\x00", b"MM\x00*",
                                            b"BM", b"P1", b"P4", b"P5", b"P6", b"Pf", b"RIFF\x00\x00\x00\x00WEBP",
                                            b"DDS |\x00\x00\x00", b"\x01\xda", b"FTEX", b"#define", b"8BPS"]),
                           st.binary(max_size=300)).map(b"".join)))
def test_random_bytes_decode_or_raise_input_error(data):
    _loads_or_refuses(data)


ARRAY_DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64, np.float16, np.float32,
                np.float64]


@FUZZ
@given(hnp.arrays(dtype=st.sampled_from(ARRAY_DTYPES), shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                             max_side=6)))
def test_random_arrays_load_or_raise_input_error(array):
    _loads_or_refuses(array)
    ordinary = (array.ndim == 2 or (array.ndim == 3 and 1 <= array.shape[2] <= 4)) and min(array.shape[:2]) > 0
    finite = array.dtype == np.bool_ or bool(np.isfinite(array.astype(np.float64)).all())
    if ordinary and finite:  # an ordinary image array must work, not merely fail politely
        assert image_io.load_pixels(array, PREP)[0].shape == (12, 12, 3)


@pytest.mark.parametrize("name", ["png", "jpeg", "gif"])
def test_every_truncation_of_a_small_file_decodes_or_raises_input_error(name):
    data = SEEDS[name]
    for end in range(0, len(data), max(1, len(data) // 200)):
        _loads_or_refuses(data[:end])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2 ** 32 - 1), st.integers(1, 256))
def test_median_level_is_numpys_median(height, width, seed, spread):
    """The ink framing's background level, from a 256-bin histogram, equals np.median exactly (odd and even pixel
    counts, few or many distinct levels), so every framed digit stays bit-identical."""
    from edgecnn.runtime.image import median_level

    rng = np.random.default_rng(seed)
    levels = rng.integers(0, spread, size=(height, width), dtype=np.uint8)
    assert median_level(levels) == float(np.median(levels.astype(np.float32)))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=".pngjPGEaTx -", max_size=10))
def test_a_file_is_listed_as_an_image_exactly_when_splitext_says_so(name):
    """list_images' cheap suffix test agrees with ``os.path.splitext`` (dot files included: ``.png`` has none)."""
    from edgecnn.runtime.image import IMAGE_SUFFIXES, _has_image_suffix

    assert _has_image_suffix(name) == (os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES)


@pytest.mark.parametrize("spelling", ["{tmp}/pics", "{tmp}/pics/", "{tmp}//pics", "pics", "./pics", "pics/", "."])
def test_listed_paths_are_spelled_as_the_folder_path_joined_with_the_name(tmp_path, monkeypatch, spelling):
    """The names infer prints: list_images joins strings, as ``str(Path(folder) / name)`` would spell them."""
    from pathlib import Path

    from edgecnn.runtime.image import list_images

    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ("b.png", "a.JPG", ".png", "notes.txt", "c.webp"):
        (pics / name).write_bytes(b"")
    (pics / "folder.png").mkdir()
    monkeypatch.chdir(pics if spelling == "." else tmp_path)
    folder = spelling.format(tmp=tmp_path)
    expected = [str(Path(folder) / name) for name in ("a.JPG", "b.png", "c.webp")]
    assert list_images(folder) == expected
