"""The ONNX int8 recipes side by side on the committed digits CNN: calibration method x weight granularity.

Each recipe is a real ``edgecnn export --formats onnx-int8`` of ``runs/digits-cnn/model.keras`` (200 calibration
examples, seed 0, the export's defaults) with the gate switched off (``--min-agreement 0``), so every recipe's
numbers are what validation measured on the 360-image held-out split: top-1 agreement with Keras, accuracy and the
largest output difference, plus the export's wall time (calibration is the part that differs).

Usage: python benchmarks/int8_recipes.py. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "runs" / "digits-cnn" / "model.keras"
RECIPES = [(method, per_channel) for per_channel in (True, False) for method in ("minmax", "entropy", "percentile")]


def main() -> None:
    from edgecnn.export import export_model

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for method, per_channel in RECIPES:
            out = Path(scratch) / f"{method}-{per_channel}"
            start = time.perf_counter()
            data = export_model(MODEL, out, formats=["onnx-int8"], calibration_method=method,
                                per_channel=per_channel, thresholds={"min_agreement": 0.0}, int8_fallback="off")
            seconds = time.perf_counter() - start
            result = data["validation"]["results"]["onnx-int8"]
            rows.append({"calibration_method": method, "weights": "per-channel" if per_channel else "per-tensor",
                         "agreement": result["agreement"], "accuracy": result["accuracy"],
                         "max_abs_diff": result["max_abs_diff"], "export_seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"model": str(MODEL.relative_to(ROOT)), "n": data["validation"]["n"],
                      "keras_accuracy": data["validation"]["results"]["keras"]["accuracy"], "recipes": rows},
                     indent=1))


if __name__ == "__main__":
    main()
