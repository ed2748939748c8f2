"""Detection post-processing alone: box decoding + the manifest's NMS (``runtime/detection.py``) per image.

The detector's graph stops at the raw head, so every format pays this numpy step after inference; this measures it
on the raw outputs of the export's own sample scenes (fp32 ONNX, else the first format that runs), next to the
inference that produced them, so its share of the end-to-end latency is visible; once at the manifest's score
threshold and once at a low one that sends many candidates through NMS (the worst case a user can ask for).

Usage: python benchmarks/detection_postprocess.py [--model exported/digit-detector] [--rounds 300]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_us(fn, rounds: int) -> float:
    for _ in range(max(5, rounds // 10)):
        fn()
    clock = time.perf_counter
    times = []
    for _ in range(rounds):
        start = clock()
        fn()
        times.append((clock() - start) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "exported" / "digit-detector"))
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--stress-threshold", type=float, default=0.05,
                        help="a low score threshold that sends many candidates (up to pre_nms_top_k) through NMS")
    args = parser.parse_args()

    import edgecnn

    detector = edgecnn.load(args.model)
    if detector.task != "object-detection":
        raise SystemExit(f"{args.model} is a {detector.task} model, not a detector")
    images = sorted(p for p in (Path(args.model) / "samples").iterdir() if p.suffix.lower() in (".png", ".jpg"))
    rows, low = [], args.stress_threshold
    for image in images[:8]:
        x, size = detector.preprocess(str(image))
        raw = detector.run(x)
        scores = raw[detector._scores]
        candidates = int((scores > detector.threshold).sum())
        kept = len(detector.decode(raw, [size])[0][0])
        rows.append({"image": image.name, "candidates": candidates, "detections": kept,
                     "decode_nms_us": median_us(lambda r=raw, s=size: detector.decode(r, [s]), args.rounds),
                     "stress_candidates": int((scores > low).sum()),
                     "stress_detections": len(detector.decode(raw, [size], low)[0][0]),
                     "stress_decode_nms_us": median_us(lambda r=raw, s=size, t=low: detector.decode(r, [s], t),
                                                       args.rounds),
                     "inference_us": median_us(lambda x=x: detector.run(x), args.rounds // 3)})
    summary = {key: statistics.median(r[key] for r in rows)
               for key in ("decode_nms_us", "stress_decode_nms_us", "inference_us")}
    print(json.dumps({"model": str(args.model), "format": detector.format, "rounds": args.rounds,
                      "threshold": detector.threshold, "stress_threshold": args.stress_threshold,
                      "nms": "class-agnostic" if detector.spec.class_agnostic else "class-wise", "images": rows,
                      "median": summary}))


if __name__ == "__main__":
    main()
