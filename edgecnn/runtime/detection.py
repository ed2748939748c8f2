"""Turn a detector's raw head tensors into boxes: decoding, score threshold, NMS (numpy only).

The exported graphs stop at the raw head so that this one function, not four converters, decides what a detection
is: every backend (and the Keras model during training and validation) goes through :func:`decode`, so all formats
are measured and run identically.

The head is anchor-free (FCOS-like), on one grid of stride ``s`` (manifest ``detection`` section):

* ``scores``: N x H x W x C class probabilities (sigmoid inside the graph); a cell scores high for class c when
  it lies near the centre of a class-c object (several neighbouring cells may: NMS keeps the best).
* ``boxes``: N x H x W x 4 raw distances (left, top, right, bottom) from the cell centre
  ``((j + 0.5) s, (i + 0.5) s)`` to the box edges: ``distance = softplus(raw) * s`` model-input pixels.

Decoding keeps cells whose score passes the threshold (at most ``pre_nms_top_k`` of them, best first), turns them
into boxes, suppresses boxes that overlap a better one by IoU > ``nms_iou``, keeps at most ``max_detections``, and
finally scales boxes from model-input pixels to the original image's pixels.

The manifest's ``nms`` says which boxes may suppress each other: ``"class-wise"`` (the default, and what manifests
written before the field existed get: "class-wise greedy" was a description then) lets only boxes of one class do so,
so two objects of different classes may overlap; ``"class-agnostic"`` lets any better box suppress, for models whose
classes exclude each other (a digit is a 9 or an 8, never both), where class-wise NMS draws two labels on one object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..manifest import MANIFEST_NAME, MAX_DETECTIONS, MAX_IMAGE_SIDE, Fields

BOX_ENCODING = "ltrb-softplus-stride"
DEFAULTS = {"score_threshold": 0.4, "nms_iou": 0.5, "max_detections": 100, "pre_nms_top_k": 200}
#: The manifest's ``nms`` values -> whether NMS is class-agnostic ("class-wise greedy": exports before the choice).
NMS_MODES = {"class-wise": False, "class-wise greedy": False, "class-agnostic": True}


@dataclass(frozen=True)
class DecodeSpec:
    """What decoding needs, read from the manifest's ``detection`` section (see :meth:`from_section`)."""

    stride: int
    grid: tuple[int, int]  # (rows H, columns W)
    input_size: tuple[int, int]  # (width, height) of the model input
    score_threshold: float = DEFAULTS["score_threshold"]
    nms_iou: float = DEFAULTS["nms_iou"]
    max_detections: int = DEFAULTS["max_detections"]
    pre_nms_top_k: int = DEFAULTS["pre_nms_top_k"]
    class_agnostic: bool = False  # manifest "nms": "class-agnostic" (see NMS_MODES)

    @classmethod
    def from_section(cls, section: dict, where: str | os.PathLike = MANIFEST_NAME) -> DecodeSpec:
        """Build from ``manifest["detection"]`` (``where`` names its file in errors), every field checked.

        A value decoding cannot use (stride 0, an input size of 0, a NaN threshold, a top-k of 10^12) is a
        one-line ModelError here, not a ZeroDivisionError or an empty or wrong answer later. Unknown box encodings
        are refused by the caller.
        """
        fields = Fields(section, where, "detection")
        stride = fields.integer("stride", 1, MAX_IMAGE_SIDE)
        grid, input_size = fields.integers("grid", 2, 1, MAX_IMAGE_SIDE), fields.integers("input_size", 2, 1,
                                                                                          MAX_IMAGE_SIDE)
        # cell centres and box sizes are multiples of the stride: it must be the one that makes the grid
        if any(cells not in (pixels // stride, -(-pixels // stride))
               for cells, pixels in zip(grid, (input_size[1], input_size[0]))):
            raise fields.error("stride", f"the step from the {list(input_size)} input to the {list(grid)} grid "
                                         "(input size / grid size)")
        return cls(stride=stride, grid=grid, input_size=input_size,
                   score_threshold=fields.number("score_threshold", 0.0, 1.0, default=DEFAULTS["score_threshold"]),
                   nms_iou=fields.number("nms_iou", 0.0, 1.0, default=DEFAULTS["nms_iou"]),
                   max_detections=fields.integer("max_detections", 1, MAX_DETECTIONS,
                                                 default=DEFAULTS["max_detections"]),
                   pre_nms_top_k=fields.integer("pre_nms_top_k", 1, MAX_DETECTIONS, default=DEFAULTS["pre_nms_top_k"]),
                   class_agnostic=NMS_MODES[fields.string("nms", NMS_MODES, default="class-wise")])


@lru_cache(maxsize=8)
def cell_centres(grid: tuple[int, int], stride: int) -> np.ndarray:
    """H x W x 2 (x, y) centres of the grid cells in model-input pixels (cached: the grid never changes)."""
    rows, cols = grid
    ys, xs = np.meshgrid((np.arange(rows, dtype=np.float32) + 0.5) * stride,
                         (np.arange(cols, dtype=np.float32) + 0.5) * stride, indexing="ij")
    centres = np.stack([xs, ys], axis=-1)
    centres.setflags(write=False)
    return centres


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x) without overflow."""
    return np.logaddexp(np.float32(0.0), x)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (x0, y0, x1, y1) boxes: len(a) x len(b)."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, limit: int,
        class_agnostic: bool = False) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first (at most ``limit``).

    A box is dropped when a better-scoring box *of the same class* overlaps it by IoU > ``iou``; boxes of different
    classes never suppress each other, unless ``class_agnostic``, where any better box does.
    """
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    suppressing = iou_matrix(boxes[order], boxes[order]) > iou
    if not class_agnostic:
        suppressing &= classes[order][:, None] == classes[order][None, :]
    alive = np.ones(len(order), bool)
    keep = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(order[i])
        if len(keep) >= limit:
            break
        alive[i + 1:] &= ~suppressing[i, i + 1:]
    return np.asarray(keep, dtype=np.int64)


def decode(boxes_raw: np.ndarray, scores: np.ndarray, spec: DecodeSpec, original_size: tuple[int, int] | None = None,
           threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw head outputs -> (boxes K x 4 float32, scores K, class indices K), best first.

    ``boxes_raw`` is H x W x 4, ``scores`` H x W x C (a leading batch axis of 1 is accepted). Boxes are
    (x0, y0, x1, y1) in the pixels of the original image of ``original_size`` = (width, height) (model-input pixels
    when None), clipped to it. ``threshold`` defaults to the spec's score threshold.
    """
    if boxes_raw.ndim == 4:
        boxes_raw, scores = boxes_raw[0], scores[0]
    threshold = spec.score_threshold if threshold is None else float(threshold)
    flat = scores.reshape(-1)
    candidates = np.flatnonzero(flat > threshold)
    if len(candidates) > spec.pre_nms_top_k:
        candidates = candidates[np.argpartition(-flat[candidates], spec.pre_nms_top_k - 1)[:spec.pre_nms_top_k]]
    num_classes = scores.shape[-1]
    cells, classes = np.divmod(candidates, num_classes)
    kept_scores = flat[candidates]
    centres = cell_centres(tuple(scores.shape[:2]), spec.stride).reshape(-1, 2)[cells]
    distances = softplus(boxes_raw.reshape(-1, 4)[cells]) * np.float32(spec.stride)
    boxes = np.concatenate([centres - distances[:, :2], centres + distances[:, 2:]], axis=1)
    keep = nms(boxes, kept_scores, classes, spec.nms_iou, spec.max_detections, spec.class_agnostic)
    boxes, kept_scores, classes = boxes[keep], kept_scores[keep], classes[keep]
    width, height = original_size or spec.input_size
    scale = np.array([width / spec.input_size[0], height / spec.input_size[1]] * 2, np.float32)
    boxes = np.clip(boxes * scale, 0, np.array([width, height, width, height], np.float32))
    return boxes.astype(np.float32), kept_scores.astype(np.float32), classes.astype(np.int64)


def decode_batch(boxes_raw: np.ndarray, scores: np.ndarray, spec: DecodeSpec,
                 original_sizes: list[tuple[int, int]] | None = None,
                 threshold: float | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`decode` for each image of a batch (original sizes default to the model-input size)."""
    sizes = original_sizes or [None] * len(scores)
    return [decode(b, s, spec, size, threshold) for b, s, size in zip(boxes_raw, scores, sizes)]


def draw_detections(image, detections, labels_font_size: int = 12):
    """A copy of PIL ``image`` (RGB) with each detection's box, label and score drawn on it.

    ``detections`` are objects with ``label``, ``score`` and ``box`` (original-image pixels). Line width and text
    follow the image size so that the drawing reads on a 128-pixel scene and on a photograph alike. A label sits on
    the box's top edge, above it where there is room, else just inside it, shifted left or down as far as needed to
    lie whole inside the image (see :func:`label_origin`).
    """
    from PIL import ImageDraw, ImageFont

    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 200))
    size = max(labels_font_size, round(max(canvas.size) / 40))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap font size
        font = ImageFont.load_default()
    for det in detections:
        colour = _PALETTE[sum(map(ord, det.label)) % len(_PALETTE)]  # stable across runs, unlike hash()
        x0, y0, x1, y1 = det.box
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{det.label} {det.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        label_size = (right - left + 2 * width, bottom - top + 2 * width)
        lx, ly = label_origin(det.box, label_size, canvas.size)
        draw.rectangle([lx, ly, lx + label_size[0] - 1, ly + label_size[1] - 1], fill=colour)
        draw.text((lx + width - left, ly + width - top), text, fill=(0, 0, 0), font=font)
    return canvas


def label_origin(box, label_size: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel of a ``label_size`` (w, h) label for ``box`` in an image of ``image_size`` (w, h).

    Above the box's top-left corner when it fits there, else inside the box under its top edge; then moved left
    (a box at the right edge) and up or down (a box at the bottom or top edge) until the whole label is inside the
    image. A label wider or taller than the image starts at its left or top edge.
    """
    (x0, y0, _, _), (w, h), (width, height) = box, label_size, image_size
    x = min(round(x0), width - w)
    y = round(y0) - h if round(y0) - h >= 0 else round(y0)
    y = min(y, height - h)
    return max(x, 0), max(y, 0)


_PALETTE = [(255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
            (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255)]
