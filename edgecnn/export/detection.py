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

#: Test scenes shipped in ``samples/`` (with ``ground_truth.json``); small PNGs, a few hundred kB in all.
SAMPLE_SCENES = 10


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
        return {**super().manifest_sections(), "detection": self.run["detection"]}

    def write_samples(self, folder: Path, reference: list[np.ndarray], per_class: int) -> dict:
        """The first ``SAMPLE_SCENES`` test scenes as PNG, and their boxes in COCO format (ground_truth.json)."""
        from PIL import Image

        from ..train.detection_metrics import coco_ground_truth

        folder.mkdir(parents=True, exist_ok=True)
        count = min(SAMPLE_SCENES, len(self.splits.x_test))
        names = [f"scene-{k + 1:02d}.png" for k in range(count)]
        for name, pixels in zip(names, self.splits.x_test[:count]):
            Image.fromarray(pixels).save(folder / name, optimize=True)
        sizes = [(int(p.shape[1]), int(p.shape[0])) for p in self.splits.x_test[:count]]
        truth = coco_ground_truth(self.splits.y_test[:count], self.splits.labels, sizes, names)
        truth["info"] = {"description": f"the first {count} {self.splits.name} test scenes (seed "
                                        f"{self.splits.seed}); bbox is [x, y, width, height] in image pixels, "
                                        "category_id is label index + 1"}
        (folder / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
        return {"folder": "samples", "count": count, "ground_truth": "samples/ground_truth.json",
                "selection": f"the first {count} test-split scenes"}

    def int8_failures(self, fmt: str, measured: dict, keras_metric: dict, thresholds: dict) -> list[str]:
        drop = keras_metric["map50"] - measured["map50"]
        if drop > thresholds["max_map_drop"]:
            return [(f"{fmt}: mAP@0.5 {measured['map50']:.4f} is {drop * 100:.1f} pts below Keras' "
                     f"{keras_metric['map50']:.4f} (limit {thresholds['max_map_drop'] * 100:.1f})")]
        return []


ADAPTERS[DetectionAdapter.task] = DetectionAdapter
