"""The object-detection export adapter: two raw head outputs, mAP-based validation, scenes + COCO ground truth.

The graph ends at the raw ``boxes`` and ``scores`` tensors (decoding lives in ``runtime/detection.py``), so fp32
parity is checked on those raw values (``max_diff``), and int8 files on what quantization may legitimately change:
mAP@0.5 may drop by at most ``max_map_drop`` from Keras' (both measured by pycocotools on the held-out scenes,
after the same runtime decoding).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .tasks import ADAPTERS, ExportAdapter

#: Test images shipped in ``samples/`` (with ``ground_truth.json``); for digit-scenes small PNGs, ~100 kB in all.
SAMPLE_SCENES = 10
#: Datasets whose classes exclude each other (a digit is a 9 or an 8, never both): their exports decode with
#: class-agnostic NMS, so one object never gets two labels. Elsewhere (COCO: a cup on a table) NMS is class-wise.
EXCLUSIVE_CLASSES = ("digit-scenes",)


class DetectionAdapter(ExportAdapter):
    task = "object-detection"

    def __init__(self, model, splits, run: dict):
        super().__init__(model, splits, run)
        if not isinstance(run.get("detection"), dict):
            raise ModelError("this detector's run.json has no 'detection' section (grid, stride, thresholds); "
                             "train it with 'edgecnn train' so decoding can be described in the manifest")
        names = set(getattr(model, "output_names", None) or [])
        if names and not {"boxes", "scores"} <= names:
            raise ModelError(f"a detector must have outputs named 'boxes' and 'scores', this one has {sorted(names)}")

    def outputs(self) -> list[dict]:
        section = self.run["detection"]
        rows, cols = section["grid"]
        return [
            {"name": "boxes", "kind": "raw-ltrb", "shape": [None, rows, cols, 4],
             "meaning": section["outputs"]["boxes"]},
            {"name": "scores", "kind": "probabilities", "shape": [None, rows, cols, len(self.splits.labels)],
             "meaning": section["outputs"]["scores"]},
        ]

    def manifest_sections(self) -> dict:
        nms = "class-agnostic" if self.splits.name in EXCLUSIVE_CLASSES else "class-wise"
        return {**super().manifest_sections(), "detection": {**self.run["detection"], "nms": nms}}

    def write_samples(self, folder: Path, reference: list[np.ndarray], per_class: int) -> dict:
        """The first ``SAMPLE_SCENES`` test images and their boxes in COCO format (ground_truth.json): the user's own
        files as they were, with boxes in their pixels (``coco``), else PNGs of generated scenes."""
        from ..runtime.image import open_image
        from ..train.detection_metrics import coco_ground_truth
        from .tasks import save_sample

        folder.mkdir(parents=True, exist_ok=True)
        count = min(SAMPLE_SCENES, len(self.splits.x_test))
        originals = self.splits.test_files or [None] * count
        names, sizes, truth_boxes = [], [], []
        scenes = zip(self.splits.x_test[:count], self.splits.y_test[:count], originals[:count])
        for k, (pixels, annotation, original) in enumerate(scenes):
            names.append(save_sample(folder, f"scene-{k + 1:02d}", pixels, original))
            height, width = pixels.shape[:2]
            shipped = open_image(folder / names[-1])  # an original's boxes go back to its own pixels
            scale = np.array([shipped.width / width, shipped.height / height] * 2, np.float32)
            sizes.append(shipped.size)
            truth_boxes.append({**annotation, "boxes": np.asarray(annotation["boxes"], np.float32) * scale})
        truth = coco_ground_truth(truth_boxes, self.splits.labels, sizes, names)
        truth["info"] = {"description": f"the first {count} {self.splits.name} test images (seed "
                                        f"{self.splits.seed}); bbox is [x, y, width, height] in image pixels, "
                                        "category_id is label index + 1"}
        (folder / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
        return {"folder": "samples", "count": count, "ground_truth": "samples/ground_truth.json",
                "selection": f"the first {count} test-split images"
                             + (", the original files" if self.splits.test_files else "")}

    def int8_failures(self, fmt: str, measured: dict, keras_metric: dict, thresholds: dict) -> list[str]:
        drop = keras_metric["map50"] - measured["map50"]
        if drop > thresholds["max_map_drop"]:
            return [(f"{fmt}: mAP@0.5 {measured['map50']:.4f} is {drop * 100:.1f} pts below Keras' "
                     f"{keras_metric['map50']:.4f} (limit {thresholds['max_map_drop'] * 100:.1f})")]
        return []


ADAPTERS[DetectionAdapter.task] = DetectionAdapter
