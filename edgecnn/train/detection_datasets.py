"""Object-detection datasets: ``digit-scenes`` (generated, offline, real digits on real photographs) and ``coco``.

Each split's ``x`` is an N x H x W x 3 uint8 array at the model's size and its ``y`` a list with one annotation per
image, ``{"boxes": float32 K x 4 (x0, y0, x1, y1) in pixels of that array, "labels": int64 K}``. Box corners are
pixel *edges*: a box around pixels 3..7 is (3, 3, 8, 8) wide, the convention pycocotools and Pillow share.

``digit-scenes`` is generated from a seed, so the same seed gives the same scenes on every machine: it only needs
scikit-learn's bundled digits and sample photographs. Training scenes paste digits from the digits *training* split
and test scenes digits from its *test* split (the split ``digits`` uses for the same seed), so a test scene never
shows a digit the detector was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError, require
from ..runtime import image as image_io
from .datasets import Splits, image_preprocessing, register_dataset, stratified_split

DIGIT_LABELS = [str(i) for i in range(10)]
#: Ink above this fraction of full intensity counts as part of the digit when its tight box is measured.
INK_THRESHOLD = 0.2
#: Two pasted digits may overlap with at most this IoU ("a little at most").
MAX_OVERLAP_IOU = 0.1


def empty_annotation() -> dict:
    """The annotation of an image without objects (a valid, useful negative example)."""
    return {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int64)}


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each row of ``boxes``."""
    if len(boxes) == 0:
        return np.zeros((0,), np.float32)
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _background(photos: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (a fifth to all of the short side) of one photograph, resized to ``size``."""
    photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    side = int(rng.integers(min(height, width) // 5, min(height, width) + 1))
    y = int(rng.integers(0, height - side + 1))
    x = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(crop, dtype=np.float32)
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def _digit_alpha(digit: np.ndarray, width: int, height: int) -> np.ndarray:
    """An 8x8 digit (0..16) upscaled to height x width ink opacity in 0..1 (bicubic, clipped)."""
    image = Image.fromarray((digit / 16.0).astype(np.float32), mode="F")
    return np.clip(np.asarray(image.resize((width, height), Image.Resampling.BICUBIC)), 0.0, 1.0)


def _distort(alpha: np.ndarray, rng: np.random.Generator, max_px: int) -> np.ndarray:
    """A random shear (+-0.25), rotation (+-15 degrees) and stroke weight (gamma 0.6..1.6) of a digit's opacity.

    Only ~1,250 digits exist in the training split and the detector learns them by heart (validation class loss
    rises while the training loss falls). Option ``-d distort=true``; off by default because in a 22-epoch run it
    did not beat the undistorted 30-epoch reference (val mAP@0.5 0.57 vs 0.62). Digits stay within ``max_px``.
    """
    height, width = alpha.shape
    shear = rng.uniform(-0.25, 0.25)
    image = Image.fromarray(alpha.astype(np.float32), mode="F")
    image = image.transform((width, height), Image.Transform.AFFINE, (1, shear, -shear * height / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR)
    image = image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR, expand=True)
    out = np.clip(np.asarray(image), 0.0, 1.0) ** rng.uniform(0.6, 1.6)
    rows = np.flatnonzero((out >= INK_THRESHOLD).any(axis=1))
    if len(rows) and rows[-1] + 1 - rows[0] > max_px:
        factor = max_px / (rows[-1] + 1 - rows[0])
        size = (max(1, int(out.shape[1] * factor)), max(1, int(out.shape[0] * factor)))
        out = np.clip(np.asarray(Image.fromarray(out.astype(np.float32), mode="F").resize(size)), 0.0, 1.0)
    return out


def _ink_colour(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour whose luminance differs from the mean of ``patch`` by at least 80 of 255."""
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    under = float(patch.reshape(-1, 3).mean(axis=0) @ luma)
    for _ in range(50):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        if abs(float(colour @ luma) - under) >= 80:
            return colour
    return np.full(3, 0.0 if under > 127 else 255.0, np.float32)


#: How digit heights are drawn (dataset option ``heights``): "uniform" in pixels (the validation and test scenes,
#: always), or "log-uniform" - as many digits of 12-24 px as of 24-48 px, where uniform draws twice as many large
#: ones. For training scenes: the detector's misses are small digits read as another class, and small digits are a
#: third of uniform scenes (size-balanced sampling, as detectors oversample small objects).
HEIGHT_LAWS = ("uniform", "log-uniform")


def _draw_height(rng: np.random.Generator, min_px: int, max_px: int, law: str) -> int:
    if law == "log-uniform":
        return int(min(max_px, np.floor(np.exp(rng.uniform(np.log(min_px), np.log(max_px + 1))))))
    return int(rng.integers(min_px, max_px + 1))


def make_scene(photos: list[np.ndarray], digits: np.ndarray, classes: np.ndarray, rng: np.random.Generator,
               size: int = 128, min_digits: int = 1, max_digits: int = 5, min_px: int = 12,
               max_px: int = 48, ids: np.ndarray | None = None, distort: bool = False,
               heights: str = "uniform") -> tuple[np.ndarray, dict]:
    """One scene: a photograph crop with ``min_digits``..``max_digits`` digits drawn from ``digits`` pasted on it.

    Each digit is ``min_px``..``max_px`` pixels tall (width within 20 % of that), of a colour that stands out from
    what lies under it, placed where it overlaps earlier digits by IoU <= ``MAX_OVERLAP_IOU``; its box is tight to
    the ink (opacity >= ``INK_THRESHOLD``), not to the pasted square. The annotation's ``digit_ids`` records
    which digits were used (``ids[pick]``, by default positions in ``digits``): the provenance tests check.
    ``distort`` shears, rotates and re-weights each digit (see :func:`_distort`): for training scenes.
    ``heights`` is one of ``HEIGHT_LAWS``: how digit heights are drawn in ``min_px``..``max_px``.
    """
    canvas = _background(photos, size, rng)
    boxes, labels, used = [], [], []
    for _ in range(int(rng.integers(min_digits, max_digits + 1))):
        pick = int(rng.integers(len(digits)))
        height = _draw_height(rng, min_px, max_px, heights)
        width = int(np.clip(round(height * rng.uniform(0.8, 1.2)), min_px, max_px))
        alpha = _digit_alpha(digits[pick], width, height)
        if distort:
            alpha = _distort(alpha, rng, max_px)
            height, width = alpha.shape
        ink = np.argwhere(alpha >= INK_THRESHOLD)
        if len(ink) == 0:
            continue
        (r0, c0), (r1, c1) = ink.min(axis=0), ink.max(axis=0) + 1
        for _attempt in range(30):
            y = int(rng.integers(-r0, size - r1 + 1))
            x = int(rng.integers(-c0, size - c1 + 1))
            box = np.array([x + c0, y + r0, x + c1, y + r1], np.float32)
            if not boxes or box_iou(box, np.array(boxes)).max() <= MAX_OVERLAP_IOU:
                break
        else:
            continue
        # Paste the part of the digit that lies on the canvas (the empty margins may hang over the edge).
        ys, xs = slice(max(y, 0), min(y + height, size)), slice(max(x, 0), min(x + width, size))
        a = alpha[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x, None] * rng.uniform(0.85, 1.0)
        region = canvas[ys, xs]
        canvas[ys, xs] = region * (1.0 - a) + _ink_colour(region, rng) * a
        boxes.append(box)
        labels.append(int(classes[pick]))
        used.append(int(ids[pick]) if ids is not None else pick)
    annotation = {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int64),
                  "digit_ids": np.array(used, np.int64)}
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), annotation


def sample_photographs() -> list[np.ndarray]:
    """scikit-learn's two bundled photographs (china.jpg, flower.jpg) as uint8 RGB arrays."""
    sklearn_datasets = require("sklearn.datasets", "train", "The digit-scenes dataset")
    return [np.asarray(img, np.uint8) for img in sklearn_datasets.load_sample_images().images]


def make_scenes(count: int, digits: np.ndarray, classes: np.ndarray, seed: int, stream: int,
                photos: list[np.ndarray] | None = None, ids: np.ndarray | None = None, distort: bool = False,
                **scene_options) -> tuple[np.ndarray, list[dict]]:
    """``count`` scenes from one seeded random stream (``stream`` keeps the splits' streams independent)."""
    photos = photos if photos is not None else sample_photographs()
    rng = np.random.default_rng([seed, stream])
    scenes = [make_scene(photos, digits, classes, rng, ids=ids, distort=distort, **scene_options)
              for _ in range(count)]
    size = scene_options.get("size", 128)
    images = np.stack([s[0] for s in scenes]) if scenes else np.zeros((0, size, size, 3), np.uint8)
    return images, [s[1] for s in scenes]


def digit_split_indices(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(8x8 digit images, classes, train/val/test indices): the very split the ``digits`` dataset uses."""
    sklearn_datasets = require("sklearn.datasets", "train", "The digit-scenes dataset")
    digits = sklearn_datasets.load_digits()
    classes = digits.target.astype(np.int64)
    return (digits.images.astype(np.float32), classes, *stratified_split(classes, seed))


@register_dataset("digit-scenes", "object-detection",
                  "generated scenes: 1-5 real sklearn digits (12-48 px) pasted on crops of sklearn's sample "
                  "photographs; test scenes use test-split digits only")
def _load_digit_scenes(seed: int = 0, train: int = 6000, val: int = 500, test: int = 500, size: int = 128,
                       min_px: int = 12, max_px: int = 48, max_digits: int = 5, distort: bool = False,
                       fresh: bool = False, heights: str = "uniform") -> Splits:
    """``fresh=True`` gives the trainer ``train`` new training scenes every epoch (same digits, new backgrounds,
    sizes, colours, places - and shapes with ``distort``): ~1,250 training digits are few, and a detector that
    sees the same 4,000 scenes every epoch learns them by heart. Validation and test scenes never change; like
    ``distort``, ``heights`` (see ``HEIGHT_LAWS``) applies to training scenes only."""
    for name, value in (("train", train), ("val", val), ("test", test)):
        if int(value) < 1:
            raise InputError(f"digit-scenes: the {name} split needs at least 1 scene, got {value}")
    if not 8 <= min_px <= max_px <= size:
        raise InputError(f"digit-scenes: need 8 <= min_px <= max_px <= size, got {min_px}, {max_px}, {size}")
    if heights not in HEIGHT_LAWS:
        raise InputError(f"digit-scenes: heights must be one of {', '.join(HEIGHT_LAWS)}, got {heights!r}")
    images, classes, train_idx, val_idx, test_idx = digit_split_indices(seed)
    photos = sample_photographs()
    options = {"size": size, "min_px": min_px, "max_px": max_px, "max_digits": max_digits}
    # Only training scenes are distorted or size-balanced: validation and test scenes show the digits as they are.
    training = {"distort": bool(distort), "heights": heights}
    evaluation = {"distort": False, "heights": "uniform"}
    parts = [make_scenes(int(n), images[idx], classes[idx], seed, stream, photos, ids=idx,
                         **(training if stream == 0 else evaluation), **options)
             for stream, (n, idx) in enumerate(((train, train_idx), (val, val_idx), (test, test_idx)))]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = parts

    def resample_train(epoch: int) -> tuple[np.ndarray, list[dict]]:
        # Streams 0-2 are the fixed splits; epoch k >= 1 draws from its own stream, so runs stay reproducible.
        return make_scenes(int(train), images[train_idx], classes[train_idx], seed, 100 + int(epoch), photos,
                           ids=train_idx, **training, **options)

    return Splits("digit-scenes", "object-detection", list(DIGIT_LABELS), x_train, y_train, x_val, y_val,
                  x_test, y_test, image_preprocessing(size, size, 3),
                  resample_train=resample_train if fresh else None)


@register_dataset("coco", "object-detection",
                  "your boxes in COCO format: --data ANNOTATIONS.json [images=DIR, default: beside the JSON]; "
                  "images are resized to size x size")
def _load_coco(seed: int = 0, data: str | None = None, images: str | None = None, size: int = 128) -> Splits:
    if not data:
        raise InputError("the coco dataset needs --data ANNOTATIONS.json (COCO format) and its images folder")
    path = Path(data)
    if path.is_dir():
        candidates = sorted(path.glob("*.json"))
        if len(candidates) != 1:
            raise InputError(f"{path}: expected exactly one COCO annotations .json in it, found {len(candidates)}; "
                             "pass the file itself with --data")
        path = candidates[0]
    coco = _read_coco_json(path)
    folder = Path(images) if images else _guess_image_folder(path, coco)
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    category_index = {c["id"]: i for i, c in enumerate(categories)}
    labels = [str(c.get("name", c["id"])) for c in categories]
    per_image: dict = {img["id"]: [] for img in coco["images"]}
    for ann in coco.get("annotations", []):
        if ann.get("iscrowd", 0) or ann.get("image_id") not in per_image or ann.get("category_id") not in \
                category_index:
            continue
        per_image[ann["image_id"]].append(ann)
    prep = image_preprocessing(size, size, 3)
    pixels, targets = [], []
    for info in coco["images"]:
        file = folder / info["file_name"]
        image = image_io.to_mode(image_io.open_image(file), "RGB")
        sx, sy = size / image.width, size / image.height
        pixels.append(image_io.load_pixels(image, prep)[0])
        boxes = [[a["bbox"][0] * sx, a["bbox"][1] * sy, (a["bbox"][0] + a["bbox"][2]) * sx,
                  (a["bbox"][1] + a["bbox"][3]) * sy] for a in per_image[info["id"]]]
        targets.append({"boxes": np.array(boxes, np.float32).reshape(-1, 4),
                        "labels": np.array([category_index[a["category_id"]] for a in per_image[info["id"]]],
                                           np.int64)})
    if len(pixels) < 3:
        raise InputError(f"{path} lists {len(pixels)} images; a train/val/test split needs at least 3")
    order = np.random.default_rng(seed).permutation(len(pixels))
    n_test = max(1, round(0.2 * len(order)))
    n_val = max(1, round(0.1 * len(order)))
    test_idx, val_idx, train_idx = (np.sort(order[:n_test]), np.sort(order[n_test:n_test + n_val]),
                                    np.sort(order[n_test + n_val:]))
    x = np.stack(pixels)

    def pick(idx):
        return [targets[i] for i in idx]

    return Splits("coco", "object-detection", labels, x[train_idx], pick(train_idx), x[val_idx], pick(val_idx),
                  x[test_idx], pick(test_idx), prep,
                  test_files=[str(folder / coco["images"][i]["file_name"]) for i in test_idx])


def _read_coco_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a COCO annotations .json")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "categories")):
        raise InputError(f"{path} is not COCO annotations: it needs 'images', 'annotations' and 'categories' lists")
    if not coco["categories"]:
        raise InputError(f"{path} defines no categories")
    return coco


def _guess_image_folder(path: Path, coco: dict) -> Path:
    """The folder the images' file names are relative to: beside the JSON, or its 'images' sub-folder."""
    first = coco["images"][0]["file_name"] if coco["images"] else ""
    for folder in (path.parent, path.parent / "images"):
        if (folder / first).is_file():
            return folder
    raise InputError(f"cannot find {first!r} beside {path} or in {path.parent / 'images'}; "
                     "pass the images folder with images=DIR")
