"""Whole process, as a user feels it: ``edgecnn infer IMAGE`` against the floor and against the seed's way.

Each contender is one fresh process that starts Python, imports what it needs, loads the model, classifies one PNG
and prints the label:

* ``edgecnn infer IMAGE`` (the console script, fp32 ONNX, the default), and ``--format tflite-int8``;
* the floor: ``minimal_onnx.py``, a bare onnxruntime + Pillow script with no checks at all;
* the seed's way: ``seed_keras.py``, which loads the ``.keras`` file and calls ``model.predict``;
* ``edgecnn infer IMAGE`` as it ran before the command asked numpy's OpenBLAS for one thread: with
  ``OPENBLAS_NUM_THREADS`` set to the CPU count, OpenBLAS's default (each of those threads spins ~0.1 s of CPU).

The contenders run in rounds, in a rotated order each round, so that a burst of load from other processes hits all
of them alike (the seed's way, which takes seconds, in a few rounds spread over the run); we report medians of wall
time, of CPU time (user + system, less sensitive to a busy machine) and of peak RSS, and ratios as medians of
per-round ratios, each of two runs made back to back. Then the start-up imports of ``edgecnn infer`` are timed step by step (CPU ms, medians), since at this
model size they are most of the process. Peak RSS is the child's ``ru_maxrss`` from ``os.wait4``. Linux carries ``ru_maxrss`` over ``execve`` from
the process that forked, so this script imports nothing but the standard library (about 10 MiB) to stay below every
number it measures.

Usage: python benchmarks/whole_process.py [--model DIR] [--image PNG] [--keras FILE] [--rounds N] [--seed-rounds N]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_measured(argv: list[str], env: dict) -> dict:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one process, reaped with os.wait4 for its own rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0 or not out.strip():
        raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}; run it by hand to see why")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "output": out.decode().strip().splitlines()[-1]}


#: What ``edgecnn infer`` imports, in the order it needs them; each step's cost is measured on top of the ones before.
IMPORT_STEPS = (("numpy", "import numpy"), ("onnxruntime", "import onnxruntime"),
                ("Pillow (Image, PNG plugin)", "import PIL.Image, PIL.PngImagePlugin"), ("click", "import click"),
                ("edgecnn (package, cli, runtime)", "import edgecnn, edgecnn.cli, edgecnn.runtime.infer"))


def import_costs(env: dict, rounds: int) -> dict:
    """Median CPU ms of each import step on top of the previous ones, each round in a fresh interpreter."""
    probe = "import time\nclock = time.process_time\nt = [clock()]\n"
    for _, statement in IMPORT_STEPS:
        probe += f"{statement}\nt.append(clock())\n"
    probe += "print(' '.join(str(b - a) for a, b in zip(t, t[1:])))\n"
    samples = []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        samples.append([float(v) * 1e3 for v in out.split()])
    return {name: statistics.median(row[i] for row in samples) for i, (name, _) in enumerate(IMPORT_STEPS)}


def edgecnn_command() -> list[str]:
    """The ``edgecnn`` console script beside this interpreter, as a user runs it (else ``python -m edgecnn.cli``)."""
    script = Path(sys.executable).parent / "edgecnn"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "edgecnn.cli"]


OLD_BLAS = "edgecnn infer, a BLAS thread per CPU (before)"


def contender_env(name: str, env: dict) -> dict:
    return {**env, "OPENBLAS_NUM_THREADS": str(os.cpu_count() or 1)} if name == OLD_BLAS else env


def contenders(model: Path, image: Path, keras: Path | None) -> dict[str, list[str]]:
    manifest = json.loads((model / "edgecnn.json").read_text())
    prep = manifest["preprocessing"]
    found = {
        "edgecnn infer": [*edgecnn_command(), "infer", str(image), "--model", str(model)],
        "edgecnn infer --format tflite-int8": [*edgecnn_command(), "infer", str(image), "--model", str(model),
                                               "--format", "tflite-int8"],
        "minimal onnxruntime script": [sys.executable, str(HERE / "minimal_onnx.py"), str(model), str(image)],
    }
    # what the command did before it asked for one BLAS thread (edgecnn.cli._one_blas_thread): the user's own
    # setting wins, so naming OpenBLAS's default (a thread per CPU) brings that back, side by side
    found[OLD_BLAS] = [*found["edgecnn infer"]]
    if "tflite-int8" not in manifest["files"]:
        del found["edgecnn infer --format tflite-int8"]
    if keras is not None:
        found["seed's way (.keras + model.predict)"] = [
            sys.executable, str(HERE / "seed_keras.py"), str(keras), str(image), str(prep["height"]),
            str(prep["width"]), prep["color_mode"]]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "exported" / "digits-cnn"))
    parser.add_argument("--image", help="default: the first sample of the export")
    parser.add_argument("--keras", help="default: the manifest's source.model, when it exists")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed-rounds", type=int, default=3, help="rounds that include the (slow) seed's way")
    args = parser.parse_args()
    model = Path(args.model)
    manifest = json.loads((model / "edgecnn.json").read_text())
    image = Path(args.image) if args.image else min((model / "samples").glob("*.png"))
    keras = args.keras or (manifest.get("source") or {}).get("model")
    keras = Path(keras) if keras and (ROOT / keras).is_file() else None
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) would make every process compile edgecnn's modules again
    # (~25 ms): without it the untimed first run caches bytecode, as an installed wheel has it
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "TF_CPP_MIN_LOG_LEVEL": "3"}
    commands = contenders(model, image, keras)
    names = list(commands)
    seed_every = max(1, args.rounds // max(1, args.seed_rounds))
    rounds: list[dict[str, dict]] = []
    # one untimed run each: the OS page cache and Python's bytecode caches are warm for everyone
    for name in names:
        run_measured(commands[name], contender_env(name, env))
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        seed_round = round_ % seed_every == 0 and round_ // seed_every < args.seed_rounds
        rounds.append({name: run_measured(commands[name], contender_env(name, env)) for name in order
                       if seed_round or not name.startswith("seed")})
    results = {}
    for name in names:
        runs = [r[name] for r in rounds if name in r]
        results[name] = {key: statistics.median(r[key] for r in runs) for key in ("wall_s", "cpu_s", "rss_mib")}
        results[name].update(runs=len(runs), output=runs[-1]["output"], command=" ".join(
            Path(a).name if i == 0 else a for i, a in enumerate(commands[name])))

    def paired(top: str, bottom: str, key: str) -> float:
        """Median over the rounds that ran both of top/bottom: each ratio is of two runs made back to back."""
        return statistics.median(r[top][key] / r[bottom][key] for r in rounds if top in r and bottom in r)

    ours, floor = "edgecnn infer", "minimal onnxruntime script"
    ratios = {"edgecnn_vs_floor_wall": paired(ours, floor, "wall_s"),
              "edgecnn_vs_floor_cpu": paired(ours, floor, "cpu_s")}
    ratios.update(blas_threads_before_vs_now_cpu=paired(OLD_BLAS, ours, "cpu_s"),
                  blas_threads_before_vs_now_wall=paired(OLD_BLAS, ours, "wall_s"))
    seed = next((n for n in names if n.startswith("seed")), None)
    if seed:
        ratios.update(seed_vs_edgecnn_wall=paired(seed, ours, "wall_s"), seed_vs_edgecnn_cpu=paired(seed, ours, "cpu_s"))
    imports = import_costs({**env, "OPENBLAS_NUM_THREADS": "1"}, args.rounds)  # as the edgecnn command imports
    print(json.dumps({"model": str(model), "image": str(image), "keras": str(keras) if keras else None,
                      "rounds": args.rounds, "results": results, "ratios": ratios, "import_cpu_ms": imports}))


if __name__ == "__main__":
    main()
