"""Dataset and model registries: seeded splits, user data formats, architectures' shapes."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from edgecnn.errors import InputError
from edgecnn.train.datasets import list_datasets, load_dataset

from .conftest import run_cli


def test_digits_split_is_seeded_stratified_and_disjoint():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (1257, 180, 360)
    assert np.array_equal(a.x_test, b.x_test) and not np.array_equal(a.x_test, c.x_test)
    assert a.x_train.shape[1:] == (28, 28, 1) and a.x_train.dtype == np.uint8
    counts = np.bincount(a.y_test)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: about 36 per class
    rows = {x.tobytes() for x in a.x_train}
    assert not any(x.tobytes() in rows for x in a.x_test)


def _write_idx(path, array: np.ndarray, gz: bool = False):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_mnist_from_idx_files_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    x_train, y_train = rng.integers(0, 255, (200, 28, 28)), np.repeat(np.arange(10), 20)
    x_test, y_test = rng.integers(0, 255, (50, 28, 28)), np.repeat(np.arange(10), 5)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", x_train, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", y_train)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", x_test)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y_test, gz=True)
    from_idx = load_dataset("mnist", data=str(tmp_path))
    np.savez(tmp_path / "mnist.npz", x_train=x_train.astype(np.uint8), y_train=y_train,
             x_test=x_test.astype(np.uint8), y_test=y_test)
    from_npz = load_dataset("mnist", data=str(tmp_path / "mnist.npz"))
    assert np.array_equal(from_idx.x_test[..., 0], x_test) and np.array_equal(from_npz.y_test, y_test)
    assert np.array_equal(from_idx.x_train, from_npz.x_train)
    assert len(from_idx.y_train) + len(from_idx.y_val) == 200


def test_mnist_without_files_says_what_it_expected(tmp_path):
    with pytest.raises(InputError, match="--data"):
        load_dataset("mnist")
    with pytest.raises(InputError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", data=str(tmp_path))
    result = run_cli("train", "--dataset", "mnist", "--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path))
    assert result.returncode == 2 and "no such file" in result.stderr


def test_folder_dataset_reads_any_size_and_mode(tmp_path):
    rng = np.random.default_rng(0)
    for label, value in (("cats", 40), ("dogs", 200)):
        (tmp_path / label).mkdir()
        for i in range(10):
            size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
            Image.new("L", size, value).save(tmp_path / label / f"{i}.png")
    splits = load_dataset("folder", data=str(tmp_path), size=32)
    assert splits.labels == ["cats", "dogs"] and splits.x_train.shape[1:] == (32, 32, 1)
    assert splits.preprocessing["color_mode"] == "L"
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == 20


def test_registries_list_the_issue_names():
    assert {"digits", "mnist", "folder"} <= {d.name for d in list_datasets()}
    result = run_cli("models")
    for name in ("seed-cnn", "lenet5", "mobilenet-s"):
        assert name in result.stdout


@pytest.mark.parametrize("name, shape", [("seed-cnn", (28, 28, 1)), ("lenet5", (28, 28, 1)),
                                         ("lenet5", (64, 64, 3)), ("mobilenet-s", (28, 28, 1)),
                                         ("mobilenet-s", (96, 96, 3))])
def test_architectures_build_for_the_dataset_shape(name, shape):
    from edgecnn.train.models import create_model

    model = create_model(name, shape, 4)
    assert tuple(model.output_shape) == (None, 4)
    out = model.predict(np.zeros((2, *shape), np.float32), verbose=0)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_mobilenet_width_multiplier_shrinks_the_model():
    from edgecnn.train.models import create_model

    full = create_model("mobilenet-s", (28, 28, 1), 10).count_params()
    half = create_model("mobilenet-s", (28, 28, 1), 10, alpha=0.5).count_params()
    assert half < full / 2.5


def test_wide_text_ensemble_averages_its_members_probabilities():
    from edgecnn.train.models import create_model

    ensemble = create_model("text-cnn-multi", (40,), 5, vocab_size=300, wide=True, members=3)
    single = create_model("text-cnn-multi", (40,), 5, vocab_size=300, wide=True)
    assert ensemble.count_params() == 3 * single.count_params()
    assert {f"member{m}_wide_scores" for m in (1, 2, 3)} <= {layer.name for layer in ensemble.layers}
    tokens = np.random.default_rng(0).integers(0, 300, (4, 40)).astype(np.int32)
    members = [ensemble.get_layer(f"member{m}_probabilities").output for m in (1, 2, 3)]
    import keras

    parts = keras.Model(ensemble.inputs, members).predict(tokens, verbose=0)
    np.testing.assert_allclose(ensemble.predict(tokens, verbose=0), np.mean(parts, axis=0), atol=1e-6)
    assert not np.allclose(parts[0], parts[1])  # independent towers, not one tower three times


def test_training_export_and_eval_frame_images_through_one_function():
    """``edgecnn eval`` and export validation build their inputs with the trainer's ``model_pixels``: a list of
    images of their own sizes goes through the runtime's ``load_pixels`` each, an array stays as it is, and gray
    pixels for an RGB input (a ``--target mediapipe`` export of a gray model) get the same gray in all three."""
    from edgecnn.evaluate import INPUT_BUILDERS
    from edgecnn.runtime import image as image_io
    from edgecnn.train.datasets import load_dataset, model_pixels

    drawn = load_dataset("drawn-digits", seed=3, train_per_class=1, val_per_class=1, test_per_class=1)
    prep = drawn.preprocessing
    framed = np.stack([image_io.load_pixels(image, prep)[0] for image in drawn.x_test])
    np.testing.assert_array_equal(model_pixels(drawn.x_test, prep), framed)
    np.testing.assert_array_equal(INPUT_BUILDERS["image-classification"]({"preprocessing": prep}, drawn.x_test),
                                  framed.astype(np.float32) * np.float32(prep["scale"]) + np.float32(prep["offset"]))
    gray = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    assert model_pixels(gray, {"channels": 1}) is gray
    rgb_prep = {**load_dataset("digits").preprocessing, "color_mode": "RGB", "channels": 3}
    np.testing.assert_array_equal(model_pixels(gray, rgb_prep), np.concatenate([gray] * 3, axis=-1))
    inputs = INPUT_BUILDERS["image-classification"]({"preprocessing": rgb_prep}, gray)
    assert inputs.shape == (4, 8, 8, 3) and np.array_equal(inputs[..., 0], inputs[..., 2])
