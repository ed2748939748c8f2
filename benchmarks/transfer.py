"""Transfer learning, measured offline (issue 16): does a net pretrained on digits 0-4 learn 5-9 from a few images
per class better than the same net from scratch?

Pretrains ``seed-cnn`` on the digits 0-4 (``-d classes=0,1,2,3,4``), then for each few-shot setting (10 and 3
training images per class: ``-d classes=5,6,7,8,9 -d per_class=N``) and each seed trains on 5-9 twice: from those
weights (``--weights``: the convolutions and the hidden dense layer kept, a new output layer; stage 1 trains the
head - the new output layer and the kept dense layer - on the frozen convolutions, stage 2 everything at a tenth of
the learning rate) and from scratch. Both arms of a seed see the same training images and are measured on the same
images: the whole 5-9 test split of that seed's split (~180). Validation, which early stopping watches, keeps every
5-9 image of the split (~90) in both arms. The target of issue 16: transfer beats scratch by >= 15 points (means
over the seeds).

Usage: python benchmarks/transfer.py [--seeds 5] [--per-class 10,3] [--epochs 60] [--pretrain-epochs 20]; the
last stdout line is JSON; ``markdown(data)`` words it for BENCHMARKS.md (``benchmarks/run.py`` calls it).
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
CLASSES = "5,6,7,8,9"


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def measure(per_class: int, seeds: int, epochs: int, pretrained: Path, runs: Path) -> dict:
    """Both arms of one few-shot setting over ``seeds`` seeds: accuracies, kept epochs and wall time."""
    from edgecnn.train.fit import train

    started = time.time()
    results: dict[str, list] = {"transfer": [], "scratch": []}
    kept: dict[str, list] = {"transfer": [], "scratch": []}
    test_size = 0
    for seed in range(seeds):
        for arm, weights in (("transfer", pretrained), ("scratch", None)):
            metrics = train("digits", "seed-cnn", runs / f"{per_class}-{arm}-{seed}", epochs=epochs, seed=seed,
                            verbose=0, dataset_options={"classes": CLASSES, "per_class": per_class},
                            weights=weights)
            results[arm].append(round(metrics["test_accuracy"], 4))
            kept[arm].append(metrics["kept_epoch"])
            test_size = metrics["test_size"]
            print(f"per_class {per_class} seed {seed} {arm}: {metrics['test_accuracy']:.3f} (kept epoch "
                  f"{metrics['kept_epoch']} of {metrics['epochs_run']})", file=sys.stderr)
    results["pixels"] = [round(pixel_baseline(per_class, seed), 4) for seed in range(seeds)]
    gains = [100 * (t - s) for t, s in zip(results["transfer"], results["scratch"])]
    gain = statistics.mean(gains)
    return {"per_class": per_class, "test_size": test_size, **{arm: mean_std(v) for arm, v in results.items()},
            "kept_epochs": kept, "gain_points": gain, "gain_per_seed": [round(g, 1) for g in gains],
            "met": gain >= TARGET_POINTS, "seconds": round(time.time() - started, 1)}


def pixel_baseline(per_class: int, seed: int) -> float:
    """Test accuracy of a logistic regression on the raw pixels of the same training images: how much a few of
    these clean 8x8 scans give away without any convolution (the headroom left for transfer to show)."""
    from sklearn.linear_model import LogisticRegression

    from edgecnn.train.datasets import load_dataset

    splits = load_dataset("digits", seed=seed, classes=CLASSES, per_class=per_class)
    flat = [x.reshape(len(x), -1) / 255.0 for x in (splits.x_train, splits.x_test)]
    return float(LogisticRegression(max_iter=5000).fit(flat[0], splits.y_train).score(flat[1], splits.y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--per-class", default="10,3", help="training images per class, one setting each")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of each 5-9 run (early stopping may end it)")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    args = parser.parse_args()
    from edgecnn.train.fit import train

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        pre = train("digits", "seed-cnn", runs / "pre", epochs=args.pretrain_epochs, seed=0, verbose=0,
                    dataset_options={"classes": "0,1,2,3,4"})
        print(f"pretrained on 0-4: test accuracy {pre['test_accuracy']:.3f}", file=sys.stderr)
        settings = [measure(int(n), args.seeds, args.epochs, runs / "pre" / "model.keras", runs)
                    for n in args.per_class.split(",")]
    print(json.dumps({"pretrain_test_accuracy": pre["test_accuracy"], "seeds": args.seeds, "epochs": args.epochs,
                      "pretrain_epochs": args.pretrain_epochs, "settings": settings, "target_points": TARGET_POINTS,
                      "met": all(s["met"] for s in settings), "seconds": round(time.time() - started, 1)}))


def headroom(data: dict) -> str:
    """Why the target is (not) within reach on this data, with the measured numbers."""
    by = {s["per_class"]: s for s in data["settings"]}
    most = max(by)
    room = 100 * (1 - by[most]["scratch"]["mean"])
    gains = "; ".join(f"{n} per class {by[n]['gain_points']:+.1f} ± "
                      f"{statistics.stdev(by[n]['gain_per_seed']) if len(by[n]['gain_per_seed']) > 1 else 0:.1f}"
                      for n in sorted(by, reverse=True))
    return (
        f"Why the +{data['target_points']:.0f} target is out of reach on this data: scikit-learn's 8x8 digits are so "
        f"clean that {most} scans per class already teach the net from scratch "
        f"{100 * by[most]['scratch']['mean']:.1f} %, leaving {room:.1f} points for any start to win, and a logistic "
        "regression on the raw pixels of the same images comes within a few points of either net (the reference "
        "rows). What the convolutions learnt on 0-4 is little that a few images of 5-9 cannot teach as well: the "
        f"gains (mean ± std of the per-seed differences: {gains}) are within the spread over seeds. Two runs of "
        "this benchmark on the same seeds differ by a few points per setting, as TensorFlow on a CPU is not "
        "bit-reproducible from run to run. A gain of that size needs new classes that are hard to learn from a few "
        "images and old data that is related and much larger (ImageNet under `--weights imagenet` for photos).")


RECIPE = (
    "The fine-tuning recipe itself was at fault before (issue 16's first measurement: transfer 85.3 ± 8.5 % against "
    "scratch 94.7 ± 2.4 % at 10 per class): stage 1 froze seed-cnn's hidden `Dense(64)` with the convolutions, so "
    "the new output layer learnt on 64 features tuned to 0-4, 20 of them never active on 5-9 (seed 0: 66 % "
    "against scratch's 91 %). Stage 1 now freezes only the layers before `Flatten` or global pooling "
    "(`feature_layers` in `edgecnn/train/fit.py`); the dense layers after them train with the new output layer. "
    "The 5-9 runs went from 30 to 60 epochs: both arms were still improving at 30 (kept epoch 29 of 30).")
STARTS = {"transfer": "transfer (`--weights`)", "scratch": "scratch",
          "pixels": "reference: logistic regression on raw pixels"}


def markdown(data: dict) -> str:
    """The BENCHMARKS.md section for ``data`` (this script's JSON)."""
    def arm(setting, name):
        return f"{100 * setting[name]['mean']:.1f} ± {100 * setting[name]['std']:.1f} %"

    rows = []
    for s in data["settings"]:
        for name in ("transfer", "scratch", "pixels"):
            rows.append(f"| {s['per_class']} | {STARTS[name]} | {arm(s, name)} | "
                        f"{', '.join(f'{v:.3f}' for v in s[name]['runs'])} | "
                        f"{', '.join(str(k) for k in s['kept_epochs'].get(name, [])) or '-'} |")
    lines = [
        (f"`python benchmarks/transfer.py --seeds {data['seeds']} --epochs {data['epochs']}`: `seed-cnn` pretrained "
         f"on the digits 0-4 ({data['pretrain_epochs']} epochs, test accuracy {data['pretrain_test_accuracy']:.3f}), "
         "then trained on 5-9 with N training images per class (`-d classes=5,6,7,8,9 -d per_class=N`) from those "
         "weights (`--weights`: 4 of 5 layers kept, a new output layer; stage 1 trains the head on the frozen "
         "convolutions, stage 2 everything at a tenth of the learning rate) and from scratch. Accuracy on the whole "
         f"5-9 test split of each seed's split ({data['settings'][0]['test_size']} images), mean ± std over "
         f"{data['seeds']} seeds; both arms of a seed train on the same images. {data['seconds']:.0f} s in all."),
        "",
        "| images per class | start | test accuracy (5-9) | per seed | kept epoch per seed |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    for s in data["settings"]:
        lines.append(f"- {s['per_class']} per class: transfer − scratch **{s['gain_points']:+.1f} points** "
                     f"(per seed {', '.join(f'{g:+.1f}' for g in s['gain_per_seed'])}; {s['seconds']:.0f} s); "
                     f"target ≥ +{data['target_points']:.0f}: **{'met' if s['met'] else 'not met'}**.")
    lines += ["", headroom(data), "", RECIPE]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
