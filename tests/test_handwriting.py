"""The digits model reads digits as people draw and print them (issue 16, item 6).

The generated drawn-digits set is deterministic; the committed export reaches 90 % on it in every format (runtime
only); the README's black-on-white seven answers 7; training data and the runtime invert and frame a digit with the
same function; manifests without ``polarity``/``fit`` behave exactly as before.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgecnn import manifest as manifest_io
from edgecnn.errors import ModelError
from edgecnn.evaluate import extra_tests
from edgecnn.runtime import image as image_io
from edgecnn.runtime.tasks import ImageClassifier
from edgecnn.train import drawn_digits as drawn

from .conftest import EXPORTED, ROOT, run_cli

SEVEN = ROOT / "docs" / "seven.png"
PLAIN = {"width": 28, "height": 28, "color_mode": "L"}
FRAMED = {**PLAIN, "polarity": "auto", "fit": "ink", "fit_size": 24, "fit_threshold": 0.5}


def test_generated_set_is_deterministic_and_varied():
    first, labels = drawn.drawn_digits(0, 6)
    again, labels_again = drawn.drawn_digits(0, 6)
    assert np.array_equal(labels, labels_again) and np.bincount(labels).tolist() == [6] * 10
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other, _ = drawn.drawn_digits(1, 6)
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other))
    sides = [side for image in first for side in image.shape[:2]]
    assert min(sides) >= drawn.MIN_SIDE and max(sides) <= drawn.MAX_SIDE and max(sides) > 200
    grounds = [np.median(image) for image in first]
    assert min(grounds) < 80 and max(grounds) > 170  # dark and light grounds
    assert any(image.ndim == 3 for image in first)  # some in colour


def test_missing_fonts_fall_back_to_pillows_own(monkeypatch, tmp_path):
    monkeypatch.setattr(drawn, "FONT_FILES", (str(tmp_path / "absent.ttf"),))
    assert drawn.fonts() == [None]
    images, labels = drawn.drawn_digits(3, 2, font_files=[None])
    assert len(images) == len(labels) == 20


@pytest.fixture(scope="module")
def handwriting(digits_export):
    manifest = manifest_io.read(digits_export)
    return extra_tests(manifest, manifest.formats)


def test_committed_export_reads_drawn_digits_in_every_format(handwriting, digits_export):
    manifest = manifest_io.read(digits_export)
    assert manifest["dataset"]["extra_tests"][0]["name"] == "drawn-digits"
    test = handwriting["drawn-digits"]
    assert test["n"] >= 500 and set(test["results"]) == set(manifest.formats) == {
        "onnx", "onnx-int8", "tflite", "tflite-int8", "tflite-fp16", "tflite-dynamic"}
    for fmt, scores in test["results"].items():
        assert scores["accuracy"] >= 0.90, (fmt, scores)


@pytest.mark.parametrize("fmt", ["onnx", "tflite-int8"])
def test_the_readmes_seven_drawn_black_on_white_is_a_seven(digits_export, fmt):
    result = run_cli("infer", str(SEVEN), "--model", str(digits_export), "--json", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0]["label"] == "7"


def test_a_seven_at_any_size_and_pen_reads_seven(digits_export):
    classifier = ImageClassifier(digits_export, format="onnx")
    for side, pen, ground, ink in ((28, 2, 255, 0), (120, 3, 230, 40), (400, 6, 255, 0), (400, 40, 0, 255)):
        image = Image.new("L", (side, side), ground)
        corners = [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]
        ImageDraw.Draw(image).line([(x * side, y * side) for x, y in corners], fill=ink, width=pen, joint="curve")
        assert classifier.classify(image).label == "7", (side, pen, ground)


def test_polarity_inverts_only_a_light_ground():
    dark_on_light = Image.new("L", (40, 40), 220)
    ImageDraw.Draw(dark_on_light).rectangle((15, 5, 25, 35), fill=10)
    light_on_dark = Image.fromarray(255 - np.asarray(dark_on_light))
    assert np.array_equal(np.asarray(image_io.match_polarity(dark_on_light, "auto")), np.asarray(light_on_dark))
    assert image_io.match_polarity(light_on_dark, "auto") is light_on_dark
    assert image_io.match_polarity(dark_on_light, "none") is dark_on_light


def test_fit_crops_the_ink_scales_its_longer_side_and_centres_it():
    image = Image.new("L", (300, 200), 0)
    ImageDraw.Draw(image).rectangle((10, 20, 59, 119), fill=200)  # 50 wide, 100 tall, in a corner
    pixels = image_io.fit_ink(image, FRAMED)
    rows, cols = np.flatnonzero(pixels.max(axis=1) > 127), np.flatnonzero(pixels.max(axis=0) > 127)
    assert rows[-1] - rows[0] + 1 == 24 and cols[-1] - cols[0] + 1 == 12  # aspect kept
    assert rows[0] == 2 and cols[0] == 8  # centred in 28 x 28
    assert pixels.max() == 255 and pixels[0, 0] == 0  # ink stretched to white, ground black


def test_training_digits_and_the_runtime_frame_with_one_function(monkeypatch):
    from edgecnn.train.datasets import load_dataset

    calls = []
    original = image_io.fit_ink
    monkeypatch.setattr(image_io, "fit_ink", lambda image, prep: calls.append(prep) or original(image, prep))
    splits = load_dataset("digits", polarity="auto", fit="ink")
    assert len(calls) == 1797 and all(prep is calls[0] for prep in calls)
    assert {k: splits.preprocessing[k] for k in ("polarity", "fit", "fit_size", "fit_threshold")} == {
        "polarity": "auto", "fit": "ink", "fit_size": 20, "fit_threshold": 0.5}
    image_io.load_pixels(Image.new("L", (50, 50), 255), splits.preprocessing)
    assert len(calls) == 1798
    plain = load_dataset("digits")
    assert "polarity" not in plain.preprocessing and not plain.extra_tests and len(calls) == 1798


def test_a_manifest_without_the_new_fields_resizes_as_before(tmp_path):
    seven = Image.open(SEVEN)
    expected = np.asarray(seven.convert("L").resize((28, 28), Image.Resampling.BILINEAR))[:, :, None]
    pixels, size = image_io.load_pixels(SEVEN, PLAIN)
    assert size == (200, 200) and np.array_equal(pixels, expected)  # black on white stays black on white
    old = tmp_path / "old"
    shutil.copytree(EXPORTED / "digits-cnn", old)
    data = json.loads((old / "edgecnn.json").read_text())
    for key in ("polarity", "fit", "fit_size", "fit_threshold"):
        data["preprocessing"].pop(key, None)
    data["dataset"].pop("extra_tests", None)
    (old / "edgecnn.json").write_text(json.dumps(data))
    classifier = ImageClassifier(old, format="onnx")
    assert np.allclose(classifier.preprocess(SEVEN), expected[None] / 255.0, atol=1e-6)
    assert extra_tests(manifest_io.read(old), ["onnx"]) == {}


@pytest.mark.parametrize("field, value", [("polarity", "invert"), ("fit", "box"), ("fit_size", 99),
                                          ("fit_threshold", 2.0)])
def test_a_damaged_polarity_or_fit_field_is_one_model_error(tmp_path, field, value):
    folder = tmp_path / "damaged"
    shutil.copytree(EXPORTED / "digits-cnn", folder)
    data = json.loads((folder / "edgecnn.json").read_text())
    data["preprocessing"].update({"polarity": "auto", "fit": "ink", field: value})
    (folder / "edgecnn.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=field):
        ImageClassifier(folder, format="onnx")
