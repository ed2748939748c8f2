"""mAP@0.5 and mAP@[.5:.95] by pycocotools, for training, export validation and ``edgecnn eval``.

The numbers are COCO's own (``COCOeval``, bbox, 101-point interpolation, up to 100 detections per image), not a
re-implementation, so they compare with published ones. pycocotools comes with the ``train`` extra and is imported
lazily: the runtime never needs it.

Annotations are per image ``{"boxes": K x 4 (x0, y0, x1, y1) pixels, "labels": K class indices}``; predictions are
per image ``(boxes, scores, classes)`` as :func:`edgecnn.runtime.detection.decode` returns them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from ..errors import require

#: Detections scored below this are left out of mAP (COCO practice: a low cut keeps the whole precision/recall curve).
METRIC_SCORE_THRESHOLD = 0.05


def _xywh(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]


def coco_ground_truth(annotations: Sequence[dict], labels: Sequence[str], image_sizes: Sequence[tuple[int, int]],
                      file_names: Sequence[str] | None = None) -> dict:
    """A COCO-format ground-truth dict (images, annotations, categories); ids start at 1 as COCOeval requires.

    ``image_sizes`` are (width, height); ``file_names`` default to ``<k>.png``. Category ids are class index + 1.
    """
    images, anns = [], []
    for k, (annotation, (width, height)) in enumerate(zip(annotations, image_sizes)):
        name = file_names[k] if file_names else f"{k}.png"
        images.append({"id": k + 1, "file_name": name, "width": int(width), "height": int(height)})
        for box, label in zip(np.asarray(annotation["boxes"]).reshape(-1, 4), annotation["labels"]):
            xywh = _xywh(box)
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": int(label) + 1, "bbox": xywh,
                         "area": round(xywh[2] * xywh[3], 3), "iscrowd": 0})
    categories = [{"id": i + 1, "name": str(name)} for i, name in enumerate(labels)]
    return {"images": images, "annotations": anns, "categories": categories}


def coco_detections(predictions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[dict]:
    """COCO result records (image ids from 1, bbox x, y, w, h) of per-image (boxes, scores, classes)."""
    results = []
    for k, (boxes, scores, classes) in enumerate(predictions):
        for box, score, cls in zip(boxes, scores, classes):
            results.append({"image_id": k + 1, "category_id": int(cls) + 1, "bbox": _xywh(box),
                            "score": float(score)})
    return results


def mean_average_precision(annotations: Sequence[dict], predictions: Sequence[tuple], labels: Sequence[str],
                           image_sizes: Sequence[tuple[int, int]]) -> dict:
    """``{"map50": AP@IoU 0.5, "map": AP@[.5:.95]}`` over all classes, computed by pycocotools' COCOeval.

    No detections at all scores 0.0; no ground truth at all is reported as NaN (COCO's -1).
    """
    require("pycocotools", "train", "Computing mAP")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = coco_ground_truth(annotations, labels, image_sizes)
    results = coco_detections(predictions)
    if not results:
        return {"map50": 0.0, "map": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress we do not want
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(v) if v >= 0 else float("nan") for v in evaluator.stats[:2]]
    return {"map50": stats[1], "map": stats[0]}


def map_of_outputs(boxes_raw: np.ndarray, scores: np.ndarray, annotations: Sequence[dict], labels: Sequence[str],
                   section: dict) -> dict:
    """mAP of a batch of raw head outputs (model-input pixel space) decoded exactly as the runtime decodes them."""
    from ..runtime.detection import DecodeSpec, decode_batch

    spec = DecodeSpec.from_section(section)
    predictions = decode_batch(boxes_raw, scores, spec, threshold=METRIC_SCORE_THRESHOLD)
    return mean_average_precision(annotations, predictions, labels, [spec.input_size] * len(annotations))


def _named(manifest: dict, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    names = [o["name"] for o in manifest["outputs"]]
    return outputs[names.index("boxes")], outputs[names.index("scores")]


def score_outputs(manifest: dict, outputs: Sequence[np.ndarray], annotations: Sequence[dict]) -> dict:
    """The ``SCORERS`` entry for detection: mAP of raw outputs against the held-out annotations."""
    boxes, scores = _named(manifest, outputs)
    return map_of_outputs(boxes, scores, annotations, manifest["labels"], manifest["detection"])


def compare_outputs(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                    threshold: float = 0.4) -> dict:
    """How far an exported file's raw outputs are from the reference's, and whether they find the same boxes.

    ``max_abs_diff`` is over every raw value of both tensors. For the boxes kept at ``threshold`` (the default
    score threshold) in the reference: ``agreement`` is the fraction matched by a box of the same class with IoU
    >= 0.5, ``min_box_iou`` the worst best-match IoU (0 when a box is missing). Boxes are compared in grid units,
    which leaves IoU unchanged, so the stride is not needed. Outputs are in the manifest order (boxes, scores).
    """
    from ..runtime.detection import DecodeSpec, decode, iou_matrix

    diff = max(float(np.max(np.abs(o - r))) if o.size else 0.0 for o, r in zip(outputs, reference))
    (boxes, scores), (ref_boxes, ref_scores) = outputs[:2], reference[:2]
    rows, cols = scores.shape[1:3]
    spec = DecodeSpec(stride=1, grid=(rows, cols), input_size=(cols, rows), score_threshold=threshold)
    matched, total, worst = 0, 0, 1.0
    for b, s, rb, rs in zip(boxes, scores, ref_boxes, ref_scores):
        mine, ref = decode(b, s, spec), decode(rb, rs, spec)
        for box, cls in zip(ref[0], ref[2]):
            total += 1
            same = mine[0][mine[2] == cls]
            best = float(iou_matrix(box[None], same).max()) if len(same) else 0.0
            worst = min(worst, best)
            matched += best >= 0.5
    return {"agreement": matched / total if total else 1.0, "min_box_iou": worst if total else 1.0,
            "max_abs_diff": diff}
