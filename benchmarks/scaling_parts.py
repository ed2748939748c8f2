"""How each part of ``edgecnn infer DIR``'s work scales over two processes on this machine, alone: the reason
``--workers 2`` stops short of 2x is then either in a part or in the whole (start-up, the split).

Each part runs in fresh processes, over the folder of ``benchmarks/workers.py`` (10,000 28x28 PNGs made here from
the digits samples with seeded noise): once in one process over every file, then in two processes started together,
each over half of them (every other file). Its scaling is ``one / max(two)``, timed inside the processes after their
imports and a warm-up call, so start-up is not in it; every process runs numpy with one OpenBLAS thread, as the
``edgecnn`` command does. Medians over the rounds.

* a pure Python loop (the same sum for each of the images) — what the cores give with nothing shared;
* reading each file's bytes;
* Pillow decoding each file (open, convert to the model's colour mode, load);
* onnxruntime's model calls, 32 images per call, one intra-op thread, on a warm session.

Usage: python benchmarks/scaling_parts.py [--images 10000] [--rounds 5] [--model DIR]. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PRELUDE = """
import os, sys, time
folder, part, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
files = [os.path.join(folder, name) for name in sorted(os.listdir(folder))][part::parts]
"""

PARTS = {
    "pure Python loop": """
def work():
    for _ in files:
        total = 0
        for i in range(2000):
            total += i
""",
    "read the files' bytes": """
def work():
    for path in files:
        with open(path, "rb") as f:
            f.read()
""",
    "Pillow decode (open, convert, load)": """
from PIL import Image
def work():
    for path in files:
        Image.open(path).convert("RGB").load()
""",
    "onnxruntime model calls (batch 32, warm)": """
import numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(sys.argv[4], options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
shape = [32 if not isinstance(d, int) else d for d in session.get_inputs()[0].shape]
x = np.random.default_rng(0).random(shape, dtype=np.float32)
session.run(None, {name: x})
def work():
    for _ in range(len(files) // 32):
        session.run(None, {name: x})
""",
}

EPILOGUE = """
start = time.perf_counter()
work()
print(time.perf_counter() - start)
"""


def timed(code: str, folder: Path, model: Path, parts: int) -> float:
    """Seconds of the slowest of ``parts`` processes started together, each on its share of the files."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(folder), str(part), str(parts), str(model)],
                              stdout=subprocess.PIPE, text=True, env=env) for part in range(parts)]
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a part failed: exit codes {[proc.returncode for proc in procs]}")
    return max(float(out) for out in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "exported" / "digits-cnn"))
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from workers import make_images

    model = Path(args.model)
    found = {}
    with tempfile.TemporaryDirectory(prefix="edgecnn-scaling-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.images, model)
        for label, body in PARTS.items():
            code = PRELUDE + body + EPILOGUE
            timed(code, folder, model / "model.onnx", 1)  # untimed: page cache and bytecode warm
            ones, twos = [], []
            for _ in range(args.rounds):
                ones.append(timed(code, folder, model / "model.onnx", 1))
                twos.append(timed(code, folder, model / "model.onnx", 2))
            found[label] = {"one_process_s": statistics.median(ones), "two_processes_s": statistics.median(twos),
                            "scaling": statistics.median(a / b for a, b in zip(ones, twos)),
                            "scalings": [round(a / b, 3) for a, b in zip(ones, twos)]}
    print(json.dumps({"images": args.images, "rounds": args.rounds, "cpus": os.cpu_count(),
                      "load_after": os.getloadavg(), "parts": found}))


if __name__ == "__main__":
    main()
