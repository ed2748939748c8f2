"""``edgecnn infer DIR --workers N`` on a folder of 10,000 28x28 PNGs: 2 workers against 1, and 1 against a bare
onnxruntime loop, side by side.

Three whole processes read the same folder (generated here, in a temporary folder, from the digits samples with
seeded noise so no two files are alike) with a copy of the export whose preprocessing is a plain resize (what the
bare loop does; the digits export's ink framing, ``fit: ink``, would be work the loop skips), and print one line per
image to a pipe this script drains:

* ``edgecnn infer DIR --workers 1`` and ``--workers 2`` (the console script, fp32 ONNX; it decodes each image
  on its own and runs them 32 per model call, :mod:`edgecnn.runtime.batching`);
* the floor: a bare loop as a user would write it (Pillow open, convert, resize; numpy scale; ``session.run`` per
  image; print the label) with no checks, in one process, twice: with onnxruntime's default thread pool, and with
  one intra-op thread (what ``edgecnn infer`` uses for a run over many inputs).

They run in rounds, in a rotated order, so a burst of load from the machine's other users hits all of them alike;
we report medians of wall and CPU time and ratios as medians of per-round ratios, with the load average before
and after (the machine may be shared: a busy core is what holds ``--workers 2`` below 2x), and the ratios of the
fastest rounds (load only ever adds time, so each contender's fastest round is its least disturbed one).

The ceiling of any split over processes: two ``edgecnn infer`` processes (``--workers 1``) started together, each
on one half of the folder (hard links), with nothing shared between them. (Each runs numpy with one OpenBLAS thread,
as the command asks since 2026-12-01: before, importing numpy started a thread per CPU that busy-waited ~0.1 s of
CPU, which two processes started together took from each other, and this arm was run twice, with and without
``OPENBLAS_NUM_THREADS=1``.)

Each ``edgecnn infer`` contender also runs on the folder's first 32 images, in the same rounds: its start-up
(interpreter, imports, model, listing, workers). The whole-process ratio counts that fixed cost once in both
arms; the steady-state ratio, ``(images - 32) / (wall - wall of 32)`` for each, is what the second core adds per
image once running (the marginal throughput).

Usage: python benchmarks/workers.py [--images 10000] [--rounds 3] [--model DIR]. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BARE_LOOP = r"""
import json, os, sys
import numpy as np, onnxruntime as ort
from PIL import Image
folder, images = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(folder, "edgecnn.json")))
prep, labels = manifest["preprocessing"], manifest["labels"]
options = ort.SessionOptions()
options.intra_op_num_threads = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # 0: onnxruntime's default pool
session = ort.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
scale = np.float32(prep["scale"])
out = sys.stdout
for entry in sorted(os.listdir(images)):
    path = os.path.join(images, entry)
    image = Image.open(path).convert(prep["color_mode"]).resize((prep["width"], prep["height"]), Image.BILINEAR)
    x = np.asarray(image, dtype=np.float32).reshape(1, prep["height"], prep["width"], -1) * scale
    scores = session.run(None, {name: x})[0][0]
    out.write(f"{path}: {labels[int(scores.argmax())]} {float(scores.max()):.3f}\n")
"""


def plain_copy(model: Path, target: Path) -> Path:
    """The export with a plain resize as its preprocessing (no ``polarity``/``fit``: the ink framing of digit
    models), so that ``edgecnn infer`` and the bare loop do the same work on every image."""
    import shutil

    shutil.copytree(model, target)
    manifest = json.loads((target / "edgecnn.json").read_text())
    for key in ("polarity", "fit", "fit_size", "fit_threshold"):
        manifest["preprocessing"].pop(key, None)
    (target / "edgecnn.json").write_text(json.dumps(manifest, indent=1))
    return target


def make_images(folder: Path, count: int, model: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    samples = [np.asarray(Image.open(p).convert("L"), dtype=np.int16) for p in sorted((model / "samples").glob("*.png"))]
    for i in range(count):
        noisy = samples[i % len(samples)] + rng.integers(-12, 13, size=samples[0].shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")


def per_image_cpu_ms(model: Path, folder: Path, count: int) -> dict:
    """Where the time of ``--workers 1`` goes against the bare loop: CPU ms per image in this process, one runtime
    thread for both (no thread pool to muddy it), over the first ``count`` images: the whole of each, then the
    steps of edgecnn's (decode, input array, model call, ranking, output line)."""
    import resource

    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from edgecnn.runtime import image as image_io
    from edgecnn.runtime.batching import BATCH, attempt, classify_paths
    from edgecnn.runtime.image import quiet_pillow
    from edgecnn.runtime.tasks import load

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    paths = [str(p) for p in sorted(folder.iterdir())[:count]]
    manifest = json.loads((model / "edgecnn.json").read_text())
    prep = manifest["preprocessing"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    task = load(model, threads=1)

    def bare(paths):
        for path in paths:
            image = Image.open(path).convert(prep["color_mode"]).resize((prep["width"], prep["height"]),
                                                                        Image.BILINEAR)
            x = np.asarray(image, dtype=np.float32).reshape(1, prep["height"], prep["width"], -1) * np.float32(
                prep["scale"])
            scores = session.run(None, {name: x})[0][0]
            f"{path}: {manifest['labels'][int(scores.argmax())]} {float(scores.max()):.3f}"

    def batches(paths):
        return [paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]

    def edgecnn(paths):  # what infer runs: a batch's images decoded one by one, one model call, one line each
        for batch in batches(paths):
            for outcome in classify_paths(task, batch, 3, lambda path: attempt(task.classify, path)):
                str(outcome.result)

    pixels = [image_io.load_pixels(path, prep)[0] for path in paths]
    inputs = [image_io.pixels_to_input(p[None], prep) for p in pixels]
    stacked = [np.concatenate(inputs[i:i + BATCH]) for i in range(0, len(inputs), BATCH)]
    probabilities = np.concatenate([task.predict(batch) for batch in stacked])
    results = [task.rank(row, 3, path) for row, path in zip(probabilities, paths)]
    steps = {
        "bare loop (PIL, numpy, session.run, one label)": bare,
        f"edgecnn infer's work (batches of {BATCH}, top-3 line)": edgecnn,
        "bare decode (Image.open + convert)": lambda paths: [Image.open(p).convert(prep["color_mode"]) for p in paths],
        "edgecnn decode (image.load_pixels: checks, EXIF, colour mode)": lambda paths: [
            image_io.load_pixels(p, prep) for p in paths],
        "edgecnn input array (pixels_to_input)": lambda paths: [image_io.pixels_to_input(p[None], prep)
                                                                for p in pixels],
        "model call, batch 1 (session.run)": lambda paths: [task.predict(x) for x in inputs],
        f"model call, batch {BATCH} (session.run)": lambda paths: [task.predict(batch) for batch in stacked],
        "top-3 ranking (typed result)": lambda paths: [task.rank(row, 3, path) for row, path in
                                                       zip(probabilities, paths)],
        "text line (str)": lambda paths: [str(result) for result in results],
        "JSON line (--json)": lambda paths: [json.dumps(result.to_dict(), ensure_ascii=False) for result in results],
    }
    found = {}
    with quiet_pillow():  # as infer holds it for the whole run
        for label, step in steps.items():
            start = cpu()
            step(paths)
            found[label] = (cpu() - start) * 1e3 / len(paths)
    return found


SMALL = 32  # images of the start-up run


#: Each contender's environment. PYTHONDONTWRITEBYTECODE (set on some CI machines) would make every process compile
#: edgecnn's modules again (~25 ms of start-up): without it the untimed first run caches bytecode, as an installed
#: wheel has it.
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_measured(argv: list[str], expect_lines: int) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=ENV)
    lines = sum(1 for _ in proc.stdout)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0 or lines != expect_lines:
        raise SystemExit(f"{' '.join(argv)}: exit {os.waitstatus_to_exitcode(status)}, {lines} lines, expected "
                         f"{expect_lines}")
    # children's rusage includes the worker processes of --workers 2 (reaped by it before it exits)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "exported" / "digits-cnn"))
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    source_model = Path(args.model)
    script = Path(sys.executable).parent / "edgecnn"
    edgecnn = [str(script)] if script.is_file() else [sys.executable, "-m", "edgecnn.cli"]
    with tempfile.TemporaryDirectory(prefix="edgecnn-workers-") as tmp:
        model = plain_copy(source_model, Path(tmp) / "model")
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.images, model)
        small, halves = Path(tmp) / "small", [Path(tmp) / "half-1", Path(tmp) / "half-2"]
        for new in (small, *halves):
            new.mkdir()
        files = sorted(folder.iterdir())
        for path in files[:SMALL]:
            os.link(path, small / path.name)
        for i, path in enumerate(files):
            os.link(path, halves[i * 2 // len(files)] / path.name)
        one_each = " & ".join(f"{shlex.join([*edgecnn, 'infer', str(half), '--model', str(model)])}"
                              for half in halves)
        commands = {
            "edgecnn infer --workers 1": [*edgecnn, "infer", str(folder), "--model", str(model), "--workers", "1"],
            "edgecnn infer --workers 2": [*edgecnn, "infer", str(folder), "--model", str(model), "--workers", "2"],
            "edgecnn infer --workers 1, 32 images": [*edgecnn, "infer", str(small), "--model", str(model),
                                                     "--workers", "1"],
            "edgecnn infer --workers 2, 32 images": [*edgecnn, "infer", str(small), "--model", str(model),
                                                     "--workers", "2"],
            "two --workers 1 processes, one per half": ["sh", "-c", f"{one_each} & wait"],
            "bare onnxruntime loop": [sys.executable, "-c", BARE_LOOP, str(model), str(folder)],
            "bare onnxruntime loop, 1 thread": [sys.executable, "-c", BARE_LOOP, str(model), str(folder), "1"],
        }
        names = list(commands)
        expected = {name: SMALL if name.endswith(", 32 images") else args.images for name in names}
        for name in names:  # untimed: page cache and bytecode caches warm for everyone
            run_measured(commands[name], expected[name])
        load_before = os.getloadavg()
        rounds = []
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            rounds.append({name: run_measured(commands[name], expected[name]) for name in order})
        load_after = os.getloadavg()
        breakdown = per_image_cpu_ms(model, folder, min(args.images, 3000))
    results = {}
    for name in names:
        wall = statistics.median(r[name]["wall_s"] for r in rounds)
        results[name] = {"wall_s": wall, "cpu_s": statistics.median(r[name]["cpu_s"] for r in rounds),
                         "images_per_s": expected[name] / wall, "walls": [r[name]["wall_s"] for r in rounds]}

    def paired(top: str, bottom: str, key: str = "wall_s") -> float:
        return statistics.median(r[top][key] / r[bottom][key] for r in rounds)

    def fastest(top: str, bottom: str) -> float:
        return min(r[top]["wall_s"] for r in rounds) / min(r[bottom]["wall_s"] for r in rounds)

    def steady(workers: int, round_: dict) -> float:
        """Seconds per image once started: the 10,000-image run less the 32-image run, per extra image."""
        full, start = round_[f"edgecnn infer --workers {workers}"], round_[f"edgecnn infer --workers {workers}, 32 images"]
        return (full["wall_s"] - start["wall_s"]) / (args.images - SMALL)

    from edgecnn.runtime.parallel import physical_cores

    print(json.dumps({
        "images": args.images, "rounds": args.rounds,
        "model": str(source_model.relative_to(ROOT) if source_model.is_relative_to(ROOT) else source_model),
        "cpus": os.cpu_count(), "physical_cores": physical_cores(), "load_before": load_before,
        "load_after": load_after, "results": results, "per_image_cpu_ms": breakdown,
        "ratios": {"workers2_speedup": paired("edgecnn infer --workers 1", "edgecnn infer --workers 2"),
                   "workers1_vs_bare": paired("edgecnn infer --workers 1", "bare onnxruntime loop"),
                   "workers1_vs_bare_cpu": paired("edgecnn infer --workers 1", "bare onnxruntime loop", "cpu_s"),
                   "workers1_vs_bare_1thread": paired("edgecnn infer --workers 1", "bare onnxruntime loop, 1 thread"),
                   "workers1_vs_bare_1thread_cpu": paired("edgecnn infer --workers 1",
                                                          "bare onnxruntime loop, 1 thread", "cpu_s"),
                   "workers2_steady_speedup": statistics.median(steady(1, r) / steady(2, r) for r in rounds),
                   "two_processes_speedup": paired("edgecnn infer --workers 1",
                                                   "two --workers 1 processes, one per half")},
        "startup_s": {w: statistics.median(r[f"edgecnn infer --workers {w}, 32 images"]["wall_s"] for r in rounds)
                      for w in (1, 2)},
        "fastest_round_ratios": {
            "workers2_speedup": fastest("edgecnn infer --workers 1", "edgecnn infer --workers 2"),
            "workers1_vs_bare": fastest("edgecnn infer --workers 1", "bare onnxruntime loop"),
            "workers1_vs_bare_1thread": fastest("edgecnn infer --workers 1", "bare onnxruntime loop, 1 thread")}}))


if __name__ == "__main__":
    main()
