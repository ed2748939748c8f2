"""A registry of named datasets, each with a fixed, seeded train/validation/test split.

Everything here works offline: the data ships inside pip packages (scikit-learn's digits and sample photographs,
the text corpora in the ``train`` extra) or comes from the user's own files. TensorFlow is not needed to load a
dataset, so ``edgecnn eval`` can rebuild a held-out split with numpy, Pillow and scikit-learn alone.

Adding a dataset::

    @register_dataset("my-data", task="image-classification", help="what it is")
    def _load_my_data(seed: int = 0, data: str | None = None, size: int = 64) -> Splits:
        ...

Its keyword parameters with defaults are its ``-d`` options (``seed`` and ``data`` are the ``--seed`` and
``--data`` flags; a loader without ``data`` reads no files): ``edgecnn datasets`` lists them, unknown keys are refused.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, require
from ..runtime import image as image_io
from .options import check_options, keyword_defaults

TEST_FRACTION = 0.2
VAL_FRACTION = 0.1


@dataclass
class Splits:
    """A dataset cut into train/val/test, plus what the runtime needs to rebuild model inputs.

    ``x_*`` hold raw examples: uint8 NHWC pixels at the model's size for images, lists of strings for text, uint8
    images for detection; ``y_*`` integer labels (classification) or per-image annotations (detection).
    ``preprocessing`` goes into the manifest unchanged; ``options`` are the arguments that rebuild this split.
    """

    name: str
    task: str
    labels: list[str]
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    x_test: Any
    y_test: Any
    preprocessing: dict
    seed: int = 0
    options: dict = field(default_factory=dict)
    #: For generated datasets: ``resample_train(epoch) -> (x, y)``, new training examples for epoch 1, 2, ...
    #: (epoch 0 trains on ``x_train``). Trainers that support it train on fresh data every epoch.
    resample_train: Callable[[int], tuple[Any, Any]] | None = None
    #: For datasets read from the user's files: the file each test example came from (export ships them as samples).
    test_files: list[str] | None = None

    def split(self, which: str) -> tuple[Any, Any]:
        """(x, y) of 'train', 'val' or 'test'."""
        if which not in ("train", "val", "test"):
            raise InputError(f"unknown split {which!r}; use train, val or test")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def describe(self) -> dict:
        """The manifest's ``dataset`` section: enough to rebuild the held-out split."""
        return {"name": self.name, "seed": self.seed, "options": self.options, "split": "test",
                "sizes": {s: len(self.split(s)[1]) for s in ("train", "val", "test")}}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    help: str
    loader: Callable[..., Splits]


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, task: str, help: str):
    """Decorator: make ``loader(seed=..., **options) -> Splits`` available as ``name``."""

    def wrap(loader: Callable[..., Splits]) -> Callable[..., Splits]:
        DATASETS[name] = DatasetInfo(name, task, help, loader)
        return loader

    return wrap


def list_datasets() -> list[DatasetInfo]:
    return [DATASETS[name] for name in sorted(DATASETS)]


def dataset_info(name: str) -> DatasetInfo:
    """The registered dataset ``name``, or a one-line error listing them all."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; 'edgecnn datasets' lists: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def reads_files(name: str) -> bool:
    """Whether the dataset reads the user's files (``--data``)."""
    return "data" in keyword_defaults(dataset_info(name).loader)


def dataset_options(name: str) -> dict:
    """``{option: default}`` of the ``-d`` options of dataset ``name``: its loader's keyword parameters except the
    seed and ``data``, which are the ``--seed`` and ``--data`` flags."""
    return keyword_defaults(dataset_info(name).loader, skip=("seed", "data"))


def check_dataset_options(name: str, options: dict, data: str | None = None) -> None:
    """Refuse unknown ``-d`` keys, and ``--data`` for a dataset that reads no files, in one line."""
    check_options(options, dataset_options(name), f"dataset {name!r}")
    if data is not None and not reads_files(name):
        raise InputError(f"dataset {name!r} reads no files of yours, so --data {data} has nothing to do; drop it, "
                         "or pick a dataset that reads files ('edgecnn datasets')")


def load_dataset(name: str, seed: int = 0, **options) -> Splits:
    """Load a registered dataset by name with a seeded split; options are the loader's keyword arguments."""
    options = {k: v for k, v in options.items() if v is not None}
    data = options.pop("data", None)
    check_dataset_options(name, options, data)
    if data is not None:
        options["data"] = data
    splits = DATASETS[name].loader(seed=seed, **options)
    splits.seed = seed
    splits.options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
    return splits



def stratified_split(labels: np.ndarray, seed: int, test: float = TEST_FRACTION,
                     val: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a seeded stratified split: ``test`` and ``val`` are fractions of the whole."""
    model_selection = require("sklearn.model_selection", "train", "Splitting a dataset")
    index = np.arange(len(labels))
    rest, test_idx = model_selection.train_test_split(index, test_size=test, random_state=seed,
                                                      stratify=labels)
    train_idx, val_idx = model_selection.train_test_split(rest, test_size=val / (1 - test), random_state=seed,
                                                          stratify=labels[rest])
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def image_preprocessing(height: int, width: int, channels: int, background: int = 0) -> dict:
    """The manifest's preprocessing section for an image model fed ``pixels / 255``."""
    return {"type": "image", "height": height, "width": width, "color_mode": "L" if channels == 1 else "RGB",
            "channels": channels, "scale": 1.0 / 255.0, "offset": 0.0, "resize": "bilinear",
            "background": background, "layout": "NHWC"}


def _from_indices(name, x, y, labels, parts, prep) -> Splits:
    train, val, test = parts
    return Splits(name, "image-classification", labels, x[train], y[train], x[val], y[val], x[test], y[test], prep)


@register_dataset("digits", "image-classification",
                  "scikit-learn's 1,797 real 8x8 handwritten digits, upscaled to 28x28 (embedded, the default)")
def _load_digits(seed: int = 0, size: int = 28) -> Splits:
    sklearn_datasets = require("sklearn.datasets", "train", "The digits dataset")
    digits = sklearn_datasets.load_digits()
    raw = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x = np.stack([image_io.resize_array(img, size, size) for img in raw])[..., None]
    y = digits.target.astype(np.int64)
    return _from_indices("digits", x, y, [str(i) for i in range(10)], stratified_split(y, seed),
                         image_preprocessing(size, size, 1))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (f"{stem}", f"{stem}.gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise InputError(f"{folder} has no {stem}[.gz]; expected the four MNIST IDX files or an mnist.npz")


@register_dataset("mnist", "image-classification",
                  "MNIST from a local mnist.npz (Keras format) or the four IDX files: --data PATH; never downloaded")
def _load_mnist(seed: int = 0, data: str | None = None) -> Splits:
    if not data:
        raise InputError("the mnist dataset needs --data PATH: a Keras-format mnist.npz or a folder with the four "
                         "IDX files (train-images-idx3-ubyte, ...); nothing is downloaded")
    path = Path(data)
    if path.is_file():
        try:
            with np.load(path) as npz:
                x_train, y_train, x_test, y_test = (npz[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path} is not a Keras mnist.npz with x_train, y_train, x_test, y_test ({exc})") from None
    elif path.is_dir():
        x_train = _read_idx(_find_idx(path, "train-images-idx3-ubyte"))
        y_train = _read_idx(_find_idx(path, "train-labels-idx1-ubyte"))
        x_test = _read_idx(_find_idx(path, "t10k-images-idx3-ubyte"))
        y_test = _read_idx(_find_idx(path, "t10k-labels-idx1-ubyte"))
    else:
        raise InputError(f"{path}: no such file or folder; expected mnist.npz or a folder with the IDX files")
    y_train = y_train.astype(np.int64)
    model_selection = require("sklearn.model_selection", "train", "Splitting a dataset")
    train_idx, val_idx = model_selection.train_test_split(
        np.arange(len(y_train)), test_size=VAL_FRACTION / (1 - TEST_FRACTION), random_state=seed, stratify=y_train)
    h, w = x_train.shape[1:3]
    return Splits("mnist", "image-classification", [str(i) for i in range(10)],
                  x_train[train_idx][..., None], y_train[train_idx], x_train[val_idx][..., None], y_train[val_idx],
                  x_test[..., None], y_test.astype(np.int64), image_preprocessing(h, w, 1))


@register_dataset("folder", "image-classification",
                  "your images: --data DIR with one sub-folder per class, any size, grayscale or colour")
def _load_folder(seed: int = 0, data: str | None = None, size: int = 64, color_mode: str | None = None,
                 background: int = 0) -> Splits:
    if not data:
        raise InputError("the folder dataset needs --data DIR with one sub-folder of images per class")
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; expected one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"{root} needs at least two class sub-folders, found {len(classes)}")
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in image_io.IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{root}: the class folders contain no images")
    images = [image_io.open_image(f) for f, _ in files]
    if color_mode is None:
        color_mode = "L" if all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images) else "RGB"
    channels = 1 if color_mode == "L" else 3
    prep = image_preprocessing(size, size, channels, background)
    x = np.stack([image_io.load_pixels(im, prep)[0] for im in images])
    y = np.array([i for _, i in files], dtype=np.int64)
    parts = stratified_split(y, seed)
    splits = _from_indices("folder", x, y, classes, parts, prep)
    splits.test_files = [str(files[i][0]) for i in parts[2]]
    return splits


def sample_name(label: str, k: int, suffix: str) -> str:
    """File name of the k-th sample of a class: ``<label>-<k><suffix>`` with path-unsafe characters replaced."""
    safe = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in label)
    return f"{safe}-{k}{suffix}"


# The text and detection datasets live in their own modules (to keep this one small); importing them registers them.
from . import detection_datasets, text_datasets  # noqa: F401
