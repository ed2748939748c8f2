"""Ray Data against ``edgecnn infer --workers 2`` on the same folder of 28x28 PNGs, side by side.

The folder and the model copy are the ones of ``benchmarks/workers.py`` (the digits samples with seeded noise;
the export with a plain resize). Contenders, in rounds in a rotated order:

* ``edgecnn infer DIR --workers 2``: a whole process printing one line per image to a pipe this script drains;
* Ray: ``edgecnn.integrations.ray.infer_dataset`` on a local Ray (``ray.init(num_cpus=2)``, started once, before
  the rounds: a cluster is up before its jobs), 2 actors, Parquet written to a temporary folder. Its time is the
  dataset's run (listing, reading, inferring, writing); ``ray.init`` is reported apart.

Both read the same files and give the same answers (``tests/test_ray.py``); this measures the engine's cost on one
machine, where Ray's scheduler, object store and Arrow conversions are overhead that a cluster pays back only with
more machines. Usage: python benchmarks/ray_infer.py [--images 10000] [--rounds 3]. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workers import ROOT, make_images, plain_copy, run_measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "exported" / "digits-cnn"))
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import pyarrow.parquet as pq
    import ray

    from edgecnn.integrations.ray import infer_dataset

    script = Path(sys.executable).parent / "edgecnn"
    edgecnn = [str(script)] if script.is_file() else [sys.executable, "-m", "edgecnn.cli"]
    with tempfile.TemporaryDirectory(prefix="edgecnn-ray-") as tmp:
        model = plain_copy(Path(args.model), Path(tmp) / "model")
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.images, model)
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_init = time.perf_counter() - started
        command = [*edgecnn, "infer", str(folder), "--model", str(model), "--workers", "2"]

        def ray_run(round_: int) -> dict:
            out = Path(tmp) / f"ray-{round_}"
            start = time.perf_counter()
            infer_dataset(str(folder), model, str(out), actors=2)
            wall = time.perf_counter() - start
            rows = pq.read_table(out, columns=["label"]).num_rows
            if rows != args.images:
                raise SystemExit(f"Ray wrote {rows} rows, expected {args.images}")
            return {"wall_s": wall}

        contenders = {"edgecnn infer --workers 2": lambda _: run_measured(command, args.images),
                      "Ray Data, 2 actors": ray_run}
        names = list(contenders)
        for name in names:  # untimed: caches warm, Ray's workers started
            contenders[name](-1)
        load_before = os.getloadavg()
        rounds = []
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            rounds.append({name: contenders[name](round_) for name in order})
        load_after = os.getloadavg()
        ray.shutdown()
    results = {name: {"wall_s": statistics.median(r[name]["wall_s"] for r in rounds),
                      "walls": [r[name]["wall_s"] for r in rounds]} for name in names}
    for entry in results.values():
        entry["images_per_s"] = args.images / entry["wall_s"]
    print(json.dumps({"images": args.images, "rounds": args.rounds, "ray_init_s": ray_init,
                      "ray": ray.__version__, "cpus": os.cpu_count(), "load_before": load_before,
                      "load_after": load_after, "results": results,
                      "ray_vs_workers2_wall": statistics.median(
                          r["Ray Data, 2 actors"]["wall_s"] / r["edgecnn infer --workers 2"]["wall_s"]
                          for r in rounds)}))


if __name__ == "__main__":
    main()
