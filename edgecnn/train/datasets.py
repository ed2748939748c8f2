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
#: Fewest images per class the 70/10/20 split can spread over train, validation and test (one each at least).
MIN_PER_CLASS = 10
#: The largest default input side of a folder dataset: the images' median size, capped here (ImageNet backbones'
#: native size; larger inputs cost time and memory quadratically and rarely help a small dataset).
MAX_DEFAULT_SIZE = 224
#: Pillow modes that hold one channel: a folder of these trains a grayscale model.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


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
    #: Where the input size and colour mode came from (``{"size": ..., "color": ...}``), for the summary printed
    #: before training: a user should never have to open run.json to learn that their images were shrunk.
    origin: dict = field(default_factory=dict)
    #: Further test sets ``edgecnn eval`` scores the model on (``{"name", "seed", "options", "split"}`` each, a
    #: registered dataset): the manifest's ``dataset.extra_tests`` records them, e.g. drawn digits for ``digits``.
    extra_tests: list[dict] = field(default_factory=list)

    def split(self, which: str) -> tuple[Any, Any]:
        """(x, y) of 'train', 'val' or 'test'."""
        if which not in ("train", "val", "test"):
            raise InputError(f"unknown split {which!r}; use train, val or test")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def describe(self) -> dict:
        """The manifest's ``dataset`` section: enough to rebuild the held-out split."""
        described = {"name": self.name, "seed": self.seed, "options": self.options, "split": "test",
                     "sizes": {s: len(self.split(s)[1]) for s in ("train", "val", "test")}}
        if self.extra_tests:
            described["extra_tests"] = self.extra_tests
        return described


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
    own = keyword_defaults(dataset_info(name).loader, skip=("seed", "data"))
    return {**own, **SUBSET_OPTIONS} if dataset_info(name).task == "image-classification" else own


#: ``-d`` options every image-classification dataset takes (``subset``): few-shot subsets of it.
SUBSET_OPTIONS = {"classes": None, "per_class": None}


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
    subset_options = {k: options.pop(k) for k in SUBSET_OPTIONS if k in options}
    splits = DATASETS[name].loader(seed=seed, **options)
    if subset_options:
        splits = subset(splits, seed=seed, **subset_options)
        options.update(subset_options)
    splits.seed = seed
    splits.options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
    return splits



def subset(splits: Splits, seed: int = 0, classes=None, per_class: int | None = None) -> Splits:
    """A few-shot subset of an image dataset: only ``classes`` (label names, comma-separated or a list; in that
    order, relabelled 0..n-1) and at most ``per_class`` training images of each (a seeded choice). Validation and
    test keep every image of those classes, so that a 10-image run is measured on as many images as a full one.
    """
    if classes is not None:
        wanted = [str(c).strip() for c in (classes.split(",") if isinstance(classes, str)
                                           else classes if isinstance(classes, (list, tuple)) else [classes])]
        unknown = [c for c in wanted if c not in splits.labels]
        if unknown or len(wanted) < 2 or len(set(wanted)) != len(wanted):
            raise InputError(f"-d classes={','.join(wanted)}: give two or more distinct labels of {splits.name} "
                             f"({', '.join(splits.labels[:12])}{', ...' if len(splits.labels) > 12 else ''})"
                             + (f"; it has no {', '.join(unknown)}" if unknown else ""))
        old_index = [splits.labels.index(c) for c in wanted]
        mapping = np.full(len(splits.labels), -1, dtype=np.int64)
        mapping[old_index] = np.arange(len(wanted))
        for which in ("train", "val", "test"):
            x, y = splits.split(which)
            keep = mapping[np.asarray(y)] >= 0
            if which == "test" and splits.test_files is not None:
                splits.test_files = [f for f, k in zip(splits.test_files, keep) if k]
            setattr(splits, f"x_{which}", _take(x, np.flatnonzero(keep)))
            setattr(splits, f"y_{which}", mapping[np.asarray(y)[keep]])
        splits.labels = wanted
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise InputError(f"-d per_class={per_class} is not a number of images; give a whole number >= 1")
        rng = np.random.default_rng(seed)
        y = np.asarray(splits.y_train)
        chosen = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class]
                                         for c in range(len(splits.labels))]))
        splits.x_train, splits.y_train = _take(splits.x_train, chosen), y[chosen]
    return splits


def _take(x, index: np.ndarray):
    """``x[index]`` for an array, or the same items of a list (images of their own sizes, as drawn-digits')."""
    return [x[i] for i in index] if isinstance(x, list) else x[index]


def model_pixels(images, prep: dict) -> np.ndarray:
    """Pixels at the model's size (N x H x W x C uint8): an array of them as it is, a list of images of any size
    each through the runtime's own :func:`~edgecnn.runtime.image.load_pixels`, as ``classify`` would see it - so a
    dataset of images of their own sizes (drawn-digits) trains on what the exported model is later given. Gray
    pixels for an RGB input (``channels`` 3: a ``--target mediapipe`` export, whose graph makes its own gray) are
    repeated into its three channels. Training, export validation and ``edgecnn eval`` all frame through here."""
    if isinstance(images, list):
        images = np.stack([image_io.load_pixels(image, prep)[0] for image in images])
    images = np.asarray(images)
    return rgb_of_gray(images) if prep.get("channels") == 3 else images


def rgb_of_gray(x: np.ndarray) -> np.ndarray:
    """Gray images (or model inputs) of one channel as three equal channels; anything else as it is."""
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def stratified_split(labels: np.ndarray, seed: int, test: float = TEST_FRACTION, val: float = VAL_FRACTION,
                     names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a seeded stratified split: ``test`` and ``val`` are fractions of the whole; ``names`` (the
    labels' names) make the refusal of a class too small to split name it."""
    model_selection = require("sklearn.model_selection", "train", "Splitting a dataset")
    index = np.arange(len(labels))
    try:
        rest, test_idx = model_selection.train_test_split(index, test_size=test, random_state=seed,
                                                          stratify=labels)
        train_idx, val_idx = model_selection.train_test_split(rest, test_size=val / (1 - test), random_state=seed,
                                                              stratify=labels[rest])
    except ValueError:  # scikit-learn: "The least populated class in y has only 1 member ..." or too few for val
        train_idx = val_idx = np.array([], dtype=int)
    counts = np.bincount(labels)
    short = [c for c in range(len(counts)) if counts[c] and not (np.any(labels[train_idx] == c)
                                                                 and np.any(labels[val_idx] == c))]
    if short:
        name = names[short[0]] if names else short[0]
        raise InputError(f"class {name!r} has only {counts[short[0]]} images, too few to put one in each of the "
                         f"train, validation and test splits; add images (at least {MIN_PER_CLASS} per class, "
                         "ideally 50 or more) or drop that class")
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
                  "scikit-learn's 1,797 real 8x8 handwritten digits, upscaled to 28x28 (embedded, the default); "
                  "polarity=auto and fit=ink make a model that reads digits drawn or printed dark on light at any "
                  "size (the runtime inverts and frames each image as training did), strokes=true adds thinner "
                  "and bolder copies of each training digit")
def _load_digits(seed: int = 0, size: int = 28, polarity: str = "none", fit: str = "none",
                 strokes: bool = False) -> Splits:
    sklearn_datasets = require("sklearn.datasets", "train", "The digits dataset")
    _check_choice("polarity", polarity, image_io.POLARITIES)
    _check_choice("fit", fit, image_io.FITS)
    digits = sklearn_datasets.load_digits()
    raw = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x = np.stack([image_io.resize_array(img, size, size) for img in raw])[..., None]
    y = digits.target.astype(np.int64)
    prep = image_preprocessing(size, size, 1)
    if polarity != "none" or fit != "none":
        prep.update(handwriting_preprocessing(size, polarity, fit))
        x = np.stack([image_io.load_pixels(img[:, :, 0], prep)[0] for img in x])  # the runtime's own framing
    splits = _from_indices("digits", x, y, [str(i) for i in range(10)], stratified_split(y, seed), prep)
    if strokes:
        splits.x_train, splits.y_train = stroke_variants(splits.x_train, splits.y_train, prep)
    if fit == "ink":  # what it is for: edgecnn eval also scores it on generated drawn and printed digits
        splits.extra_tests = [{"name": "drawn-digits", "seed": 0, "options": {}, "split": "test"}]
    return splits


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"-d {key}={value} is not one of {', '.join(choices)}; pick one of those")


def handwriting_preprocessing(size: int, polarity: str = "auto", fit: str = "ink") -> dict:
    """The manifest's polarity and framing fields of a digits model (see runtime.image.load_pixels)."""
    prep = {"polarity": polarity, "fit": fit}
    if fit == "ink":
        prep.update(fit_size=round(image_io.FIT_SIZE_FRACTION * size), fit_threshold=image_io.FIT_THRESHOLD)
    return prep


def stroke_variants(x: np.ndarray, y: np.ndarray, prep: dict) -> tuple[np.ndarray, np.ndarray]:
    """``x`` plus a thinner (3x3 minimum filter) and two bolder (3x3 and 5x5 maximum filter) copies of each image,
    re-framed by the runtime's own function: a pen's width varies, the 8x8 scans' hardly does (without the 5x5 copy
    a felt-tip 7, pen a fifth of its height, read as 1). Training split only."""
    from PIL import Image, ImageFilter

    copies = [x]
    for kind in (ImageFilter.MinFilter(3), ImageFilter.MaxFilter(3), ImageFilter.MaxFilter(5)):
        copies.append(np.stack([image_io.load_pixels(np.asarray(Image.fromarray(img[:, :, 0]).filter(kind)),
                                                     prep)[0] for img in x]))
    return np.concatenate(copies), np.concatenate([y] * len(copies))


@register_dataset("drawn-digits", "image-classification",
                  "a test set of digits drawn with a pen or typeset by Pillow (seeded): 28-400 px, dark on light "
                  "or light on dark, thin to bold, some in colour, mild noise and blur; images keep their own size "
                  "(each split holds *_per_class images of each digit; -d train_per_class=300 to pretrain on it); "
                  "framed as digits-cnn frames them (polarity=auto, fit=ink) or, with none, resized as they are")
def _load_drawn_digits(seed: int = 0, train_per_class: int = 20, val_per_class: int = 10, test_per_class: int = 60,
                       size: int = 28, polarity: str = "auto", fit: str = "ink") -> Splits:
    from .drawn_digits import drawn_digits

    _check_choice("polarity", polarity, image_io.POLARITIES)
    _check_choice("fit", fit, image_io.FITS)
    counts = {"train_per_class": train_per_class, "val_per_class": val_per_class, "test_per_class": test_per_class}
    for key, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"-d {key}={count} is not a number of images; give a whole number >= 1")
    # Streams 0, 1, 2 (train, validation, test): the defaults draw the very set every export was scored on.
    parts = [drawn_digits(seed, count, stream) for stream, count in enumerate(counts.values())]
    prep = {**image_preprocessing(size, size, 1), **handwriting_preprocessing(size, polarity, fit)}
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = parts
    return Splits("drawn-digits", "image-classification", [str(i) for i in range(10)], x_train, y_train, x_val,
                  y_val, x_test, y_test, prep)


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
                  "your images: --data DIR with one sub-folder per class, any size, grayscale or colour; "
                  "size=auto is the images' median size capped at 224, color=gray|rgb|auto (auto: the majority; "
                  "color_mode=L|RGB is the old spelling)")
def _load_folder(seed: int = 0, data: str | None = None, size: int | None = None, color: str = "auto",
                 color_mode: str | None = None, background: int = 0) -> Splits:
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
    names = [f.relative_to(root).as_posix() for f, _ in files]
    channels, color_origin = _folder_colour(images, names, color, color_mode)
    (height, width), size_origin = _folder_size(images, size)
    prep = image_preprocessing(height, width, channels, background)
    x = np.stack([image_io.load_pixels(im, prep)[0] for im in images])
    y = np.array([i for _, i in files], dtype=np.int64)
    parts = stratified_split(y, seed, names=classes)
    splits = _from_indices("folder", x, y, classes, parts, prep)
    splits.test_files = [str(files[i][0]) for i in parts[2]]
    splits.origin = {"size": size_origin, "color": color_origin}
    return splits


def _folder_size(images, size: int | None) -> tuple[tuple[int, int], str]:
    """``((height, width), where it came from)``: ``-d size=N`` (square), else the images' median size, scaled
    down (aspect kept) so that its longer side is at most ``MAX_DEFAULT_SIZE``."""
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise InputError(f"-d size={size} is not an image side; give a whole number of pixels >= 8, or leave it "
                             "out for the images' median size")
        return (size, size), f"-d size={size}"
    width = int(np.median([im.width for im in images]))
    height = int(np.median([im.height for im in images]))
    scale = min(1.0, MAX_DEFAULT_SIZE / max(width, height))
    shape = (max(8, round(height * scale)), max(8, round(width * scale)))
    capped = f", capped at {MAX_DEFAULT_SIZE}" if scale < 1 else ""
    return shape, f"the images' median size ({height}x{width}){capped}; -d size=N to choose"


def _folder_colour(images, names: list[str], color: str, color_mode: str | None) -> tuple[int, str]:
    """``(channels, where it came from)`` for ``-d color=gray|rgb|auto`` (or the older ``-d color_mode=L|RGB``);
    auto takes the majority, and the images converted to it are named (a colour JPEG among grayscale scans used to
    turn the whole model RGB without a word)."""
    if color_mode is not None:
        legacy = {"L": "gray", "RGB": "rgb"}
        if color_mode not in legacy:
            raise InputError(f"-d color_mode={color_mode} is not L or RGB; use -d color=gray|rgb|auto")
        color, given = legacy[color_mode], f"-d color_mode={color_mode}"
    else:
        given = f"-d color={color}"
    if color not in ("gray", "rgb", "auto"):
        raise InputError(f"-d color={color} is not gray, rgb or auto (auto: the mode most of the images have)")
    gray = [im.mode in GRAY_MODES for im in images]
    if color == "auto":
        color = "gray" if sum(gray) * 2 > len(gray) else "rgb"
        given = f"-d color=auto: {sum(gray)} of {len(gray)} images are grayscale"
    converted = [n for n, g in zip(names, gray) if g != (color == "gray")]
    if converted:
        shown = ", ".join(converted[:5]) + (f" and {len(converted) - 5} more" if len(converted) > 5 else "")
        given += f"; converted to {color}: {shown}"
    return (1 if color == "gray" else 3), given


def sample_name(label: str, k: int, suffix: str) -> str:
    """File name of the k-th sample of a class: ``<label>-<k><suffix>`` with path-unsafe characters replaced."""
    safe = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in label)
    return f"{safe}-{k}{suffix}"


# The text and detection datasets live in their own modules (to keep this one small); importing them registers them.
from . import detection_datasets, text_datasets  # noqa: F401
