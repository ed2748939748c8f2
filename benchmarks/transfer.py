"""Transfer learning, measured offline (issue 16): does a net pretrained on digits 0-4 learn 5-9 from 10 images
per class better than the same net from scratch?

Pretrains ``seed-cnn`` on the digits 0-4 (``-d classes=0,1,2,3,4``), then for each seed trains on 5-9 with 10
training images per class (``-d classes=5,6,7,8,9 -d per_class=10``) twice: from those weights (``--weights``: the
convolutions and the hidden dense layer kept, a new head; stage 1 the head on the frozen base, stage 2 everything at
a tenth of the learning rate) and from scratch. Both arms of a seed are measured on the same images: the whole
5-9 test split of that seed's split (~180 images). The target of issue 16: transfer beats scratch by >= 15 points
(means over the seeds).

Usage: python benchmarks/transfer.py [--seeds 5] [--epochs 30] [--pretrain-epochs 20]; the last stdout line is
JSON (``benchmarks/run.py`` writes it into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_POINTS = 15.0
FEW = {"classes": "5,6,7,8,9", "per_class": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each 5-9 run (early stopping may end it)")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    args = parser.parse_args()
    from edgecnn.train.fit import train

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        pre = train("digits", "seed-cnn", runs / "pre", epochs=args.pretrain_epochs, seed=0, verbose=0,
                    dataset_options={"classes": "0,1,2,3,4"})
        print(f"pretrained on 0-4: test accuracy {pre['test_accuracy']:.3f}", file=sys.stderr)
        results = {"transfer": [], "scratch": []}
        for seed in range(args.seeds):
            for arm, weights in (("transfer", runs / "pre" / "model.keras"), ("scratch", None)):
                metrics = train("digits", "seed-cnn", runs / f"{arm}-{seed}", epochs=args.epochs, seed=seed,
                                verbose=0, dataset_options=FEW, weights=weights)
                results[arm].append(metrics["test_accuracy"])
                print(f"seed {seed} {arm}: {metrics['test_accuracy']:.3f} (kept epoch {metrics['kept_epoch']})",
                      file=sys.stderr)
        test_size = metrics["test_size"]
    summary = {arm: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": v}
               for arm, v in results.items()}
    gain = 100 * (summary["transfer"]["mean"] - summary["scratch"]["mean"])
    print(json.dumps({"pretrain_test_accuracy": pre["test_accuracy"], "seeds": args.seeds, "epochs": args.epochs,
                      "pretrain_epochs": args.pretrain_epochs, "test_size": test_size, **summary,
                      "gain_points": gain, "target_points": TARGET_POINTS, "met": gain >= TARGET_POINTS,
                      "seconds": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
