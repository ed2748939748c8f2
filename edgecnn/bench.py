"""``edgecnn bench``: size, task metric, load time, latency, throughput and peak memory of each format of an export.

Why it is built this way:

* **One fresh process per format.** Peak RSS is a per-process high-water mark, and runtimes keep arenas, thread
  pools and caches alive; measured in one process, the second format would inherit the first one's memory and warm
  caches. Each format is therefore timed in a child (``python -m edgecnn.bench``) that imports only what that format
  needs, and its ``ru_maxrss`` is what the table shows.
* **What users run is what is timed.** Latency goes through the task class's preprocessed-input path (``predict``
  for classifiers: inference plus softmax when the model gives logits; inference plus box decoding and NMS for
  detectors), on real held-out inputs, so a detector's NMS sees real candidate boxes.
* **The metric comes from** :mod:`edgecnn.evaluate`, the very code ``edgecnn eval`` and export validation use, run in
  this (parent) process so that building the held-out split (scikit-learn for digits) never inflates a child's RSS.
* Load time is measured with the runtime module already imported: import cost is a property of the interpreter
  start-up, which ``benchmarks/`` measures as a whole process against a minimal script.
* Warm-up calls are not counted; percentiles are over ``runs`` timed calls; throughput is ``batch`` divided by the
  median time of one batch call.

The ``keras`` row (when TensorFlow is installed and the manifest's ``source.model`` file exists) times
``model.predict``, the way the seed project ran its models. A ``.keras`` file whose sha256 is not the manifest's
``source.sha256`` is another model (a later training run in the same folder): its row would compare two different
models as if they were one, so it is left out of the table, the JSON and the plot, and a note says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import manifest as manifest_io
from .errors import EdgecnnError, InputError, ModelError

KERAS = "keras"
#: The keys of one format's result: the JSON contract of ``edgecnn bench --json``.
RESULT_KEYS = ("size_mb", "metric", "load_ms", "p50_ms", "p90_ms", "p99_ms", "throughput", "rss_mib")
METRIC_KEYS = ("accuracy", "map50")  # the first of these that the task's scorer reports is the metric column
CHILD_TIMEOUT_S = 1800
#: Timed batch-1 calls of Keras ``model.predict`` at most (its row reports ``runs`` accordingly).
KERAS_MAX_RUNS = 20


def benchmark(model_dir: str | os.PathLike, formats: list[str] | None = None, runs: int = 100, batch: int = 32,
              threads: int | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Benchmark every format of the export in ``model_dir`` (and ``keras`` when it can): the ``bench`` report.

    Arguments:
        model_dir: an export folder (``edgecnn.json`` and the model files).
        formats: a subset such as ``["onnx", "tflite-int8", "keras"]``; default: every file in the export, plus
            ``keras`` when TensorFlow is importable and the manifest's ``source.model`` file exists.
        runs: timed batch-1 calls per format (after ``max(3, runs // 10)`` warm-up calls); at most
            ``KERAS_MAX_RUNS`` for ``keras``, whose ``predict`` is a thousand times slower. Each row says its ``runs``.
        batch: the batch size of the throughput measurement.
        threads: runtime threads (``None``: each runtime's default).
        progress: called with a short message before each step (the CLI prints them on stderr).

    Returns ``{"model", "task", "metric", "dataset", "n", "runs", "batch", "threads", "notes", "results":
    {FORMAT: {"status", "size_mb", "metric", "load_ms", "p50_ms", "p90_ms", "p99_ms", "throughput", "rss_mib",
    "runs"}}}``.
    A format that cannot run here keeps its row, with ``status`` "error", an ``error`` message saying why, and
    ``None`` for what was not measured. A ``keras`` row whose ``.keras`` file is not the one the export was made
    from (sha256) is left out, with a note.

    Example::

        report = benchmark("exported/digits-cnn", formats=["onnx", "tflite-int8"], runs=200)
        print(report["results"]["onnx"]["p50_ms"])
    """
    if runs < 1 or batch < 1:
        raise InputError(f"--runs ({runs}) and --batch ({batch}) must be at least 1")
    say = progress or (lambda message: None)
    manifest = manifest_io.read(model_dir)
    known = [*manifest.formats, KERAS]
    formats = list(formats) if formats else [*manifest.formats, *([KERAS] if _keras_available(manifest) else [])]
    unknown = [f for f in formats if f not in known]
    if unknown:
        raise InputError(f"{manifest.folder} has no '{unknown[0]}' format; it has {', '.join(known)}")
    notes: list[str] = []
    if KERAS in formats and _other_source_model(manifest):
        formats.remove(KERAS)
        notes.append(f"keras: left out, {manifest['source']['model']} is not the file this export was made from "
                     "(its sha256 differs from the manifest's source.sha256)")
    say("building the held-out split")
    inputs, targets, source = _inputs(manifest, notes)
    report = {"model": str(manifest.folder), "task": manifest.task, "metric": None,
              "dataset": (manifest.get("dataset") or {}).get("name"), "n": None if targets is None else len(targets),
              "inputs": source, "runs": runs, "batch": batch, "threads": threads, "notes": notes, "results": {}}
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-") as tmp:
        timing_inputs = Path(tmp) / "inputs.npy"
        np.save(timing_inputs, _timing_batch(inputs, batch))
        for fmt in formats:
            row = {"status": "ok", **dict.fromkeys(RESULT_KEYS)}
            if fmt == KERAS and not _keras_available(manifest):
                row["status"], row["error"] = "error", (
                    "needs TensorFlow (pip install 'edgecnn[train]') and the source model named in the manifest "
                    f"({(manifest.get('source') or {}).get('model')}) under the current folder")
                report["results"][fmt] = row
                continue
            row["size_mb"] = _size_mb(manifest, fmt)
            say(f"{fmt}: latency ({runs} runs at batch 1), throughput (batch {batch}), memory")
            try:
                row.update(_run_child(manifest.folder, fmt, timing_inputs, runs, batch, threads))
                if targets is not None:
                    say(f"{fmt}: {manifest.task} metric on {len(targets)} held-out examples")
                    name, value = _metric(manifest, fmt, inputs, targets, threads)
                    report["metric"], row["metric"] = name, value
            except EdgecnnError as exc:
                row["status"], row["error"] = "error", str(exc)
            report["results"][fmt] = row
    flag_slow_int8(report, {fmt: (entry.get("quantization") or {}).get("method")
                            for fmt, entry in manifest.get("files", {}).items() if isinstance(entry, dict)})
    return report


#: int8 format -> its fp32 sibling; tflite-dynamic's hybrid kernels (int8 weights, activations quantized per call)
#: are there to be faster too. tflite-fp16 is not: LiteRT dequantizes its weights once and computes in float32.
INT8_SIBLINGS = {"onnx-int8": "onnx", "tflite-int8": "tflite", "tflite-dynamic": "tflite"}


def flag_slow_int8(report: dict, quantization: dict[str, str] | None = None) -> dict:
    """Mark each int8 row (:data:`INT8_SIBLINGS`) that measured slower (p50) than its fp32 sibling in the same run.

    int8 is there to be faster and smaller; where it is only smaller, the user should know which file to ship.
    onnxruntime on x86-64 runs int8 *activations* (S8S8) in float between Quantize/Dequantize nodes, so int8 ONNX
    files made before edgecnn quantized activations to uint8 can be slower than fp32 (benchmarks/int8_speed.py):
    only those are told to re-export. ``quantization`` maps a format to its manifest's quantization method (a
    tiny model's uint8-activation file can still lose to fp32: the Q/DQ steps cost more than its convolutions).
    """
    quantization = quantization or {}
    results = report["results"]
    for fmt, row in results.items():
        base = INT8_SIBLINGS.get(fmt)
        sibling = results.get(base) if base else None
        if not sibling or row.get("status") != "ok" or sibling.get("status") != "ok":
            continue
        slow, fast = row.get("p50_ms"), sibling.get("p50_ms")
        if slow is None or fast is None or slow <= fast:
            continue
        row["status"] = "int8 slower than fp32"
        report.setdefault("notes", []).append(
            f"{fmt}: int8 slower than fp32 (p50 {slow:.2f} ms vs {fast:.2f} ms, {slow / fast:.2f}x); prefer {base} "
            "on this machine" + (", or re-export with this edgecnn (uint8 activations run as integer kernels)"
                                 if fmt == "onnx-int8" and "uint8 activations" not in (quantization.get(fmt) or "")
                                 else ""))
    return report


# --- the parent side ------------------------------------------------------------------------------------------------

def _keras_available(manifest: manifest_io.Manifest) -> bool:
    import importlib.util

    source = (manifest.get("source") or {}).get("model")
    return bool(source) and Path(source).is_file() and importlib.util.find_spec("tensorflow") is not None


def _other_source_model(manifest: manifest_io.Manifest) -> bool:
    """Whether the manifest's ``source.model`` file exists but is not the one the export was made from."""
    source = manifest.get("source") or {}
    return bool(source.get("model")) and Path(source["model"]).is_file() and \
        manifest_io.sha256_of(source["model"]) != source.get("sha256")


def _inputs(manifest: manifest_io.Manifest, notes: list[str]):
    """(model inputs, targets, where they came from): the held-out split, else the export's samples (no metric)."""
    from .evaluate import heldout

    try:
        inputs, targets = heldout(manifest)
        return inputs, targets, f"{(manifest.get('dataset') or {}).get('name')} held-out split"
    except (EdgecnnError, ImportError) as exc:
        notes.append(f"no metric: the held-out split could not be rebuilt ({exc}); timed on the export's samples")
    return _sample_inputs(manifest), None, "the export's samples"


def _sample_inputs(manifest: manifest_io.Manifest) -> np.ndarray:
    from .runtime.tasks import load

    folder = manifest.folder / (manifest.get("samples") or {}).get("folder", "samples")
    task = load(manifest.folder)
    from .runtime.image import IMAGE_SUFFIXES

    text = manifest.task == "text-classification"
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in ({".txt"} if text else IMAGE_SUFFIXES))
    if not files:
        raise ModelError(f"{manifest.folder}: no held-out split and no samples to time the model on; "
                         "install the train extra (pip install 'edgecnn[train]') or re-export with samples")
    rows = []
    for path in files:
        item = path.read_text(encoding="utf-8") if text else str(path)
        prepared = task.preprocess(item)
        rows.append(prepared[0] if isinstance(prepared, tuple) else prepared)
    return np.concatenate(rows)


def _timing_batch(inputs: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` inputs (repeated when the split is smaller): row 0 is the batch-1 input."""
    repeats = -(-batch // len(inputs))
    return np.ascontiguousarray(np.concatenate([inputs] * repeats)[:batch] if repeats > 1 else inputs[:batch])


def _size_mb(manifest: manifest_io.Manifest, fmt: str) -> float | None:
    path = Path(manifest["source"]["model"]) if fmt == KERAS else manifest.file_path(fmt)
    return round(path.stat().st_size / 1e6, 4) if path.is_file() else None


def _metric(manifest, fmt, inputs, targets, threads) -> tuple[str | None, float | None]:
    from .evaluate import SCORERS, measure

    if fmt == KERAS:
        from .keras_io import keras_outputs, load_keras_model

        scores = SCORERS[manifest.task](manifest, keras_outputs(load_keras_model(manifest["source"]["model"]),
                                                                manifest, inputs), targets)
    else:
        scores = measure(manifest, fmt, inputs, targets, None, threads)
    name = next((k for k in METRIC_KEYS if k in scores), None)
    return name, None if name is None else float(scores[name])


def _run_child(folder: Path, fmt: str, inputs: Path, runs: int, batch: int, threads: int | None) -> dict:
    """Time one format in a fresh interpreter; its last stdout line is a JSON object."""
    args = json.dumps({"model": str(folder), "format": fmt, "inputs": str(inputs), "runs": runs, "batch": batch,
                       "threads": threads})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run([sys.executable, "-m", "edgecnn.bench", args], capture_output=True, text=True,
                              check=False, env=env, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{fmt}: the benchmark did not finish in {CHILD_TIMEOUT_S} s; try fewer --runs") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"{fmt}: the benchmark process failed ({last})")
    data = json.loads(lines[-1])
    if "error" in data:
        raise ModelError(data["error"])
    return data


# --- the child side: one format, one process ------------------------------------------------------------------------

def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _time_calls(step: Callable, x: np.ndarray, count: int, warmup: int) -> list[float]:
    """Milliseconds of ``count`` calls of ``step(x)`` after ``warmup`` uncounted ones."""
    for _ in range(warmup):
        step(x)
    times = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        step(x)
        times.append((clock() - start) * 1e3)
    return times


def _open_runtime(folder: str, fmt: str, threads: int | None):
    """(import the runtime, then time the load) -> (step function, load ms)."""
    if fmt == KERAS:
        return _open_keras(folder, threads)
    from .runtime.backends import import_litert_interpreter
    from .runtime.tasks import load

    if fmt.startswith("onnx"):
        try:
            import onnxruntime  # noqa: F401  (imported before the clock starts: load time excludes import time)
        except ImportError:
            pass  # opening the model below raises the one-line MissingDependencyError
    else:
        import_litert_interpreter()
    start = time.perf_counter()
    task = load(folder, format=fmt, threads=threads)
    load_ms = (time.perf_counter() - start) * 1e3
    return _task_step(task), load_ms


def _task_step(task) -> Callable:
    """The task's preprocessed-input path: what ``classify``/``detect`` run after preprocessing."""
    if task.task == "object-detection":
        return lambda x: task.decode(task.run(x))
    return task.predict


def _open_keras(folder: str, threads: int | None):
    from .keras_io import import_tensorflow, keras_inputs, load_keras_model, ordered_outputs
    from .runtime.detection import DecodeSpec, decode_batch
    from .runtime.tasks import as_probabilities

    tf = import_tensorflow()
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    manifest = manifest_io.read(folder)
    start = time.perf_counter()
    model = load_keras_model(manifest["source"]["model"])
    load_ms = (time.perf_counter() - start) * 1e3
    names = [o["name"] for o in manifest["outputs"]]

    def ordered(raw):
        return ordered_outputs(raw, names)

    if manifest.task == "object-detection":
        spec = DecodeSpec.from_section(manifest["detection"])
        boxes, scores = names.index("boxes"), names.index("scores")

        def step(x):
            raw = ordered(model.predict(keras_inputs(model, manifest, x), verbose=0))
            return decode_batch(raw[boxes], raw[scores], spec)
    else:
        def step(x):
            return as_probabilities(ordered(model.predict(keras_inputs(model, manifest, x), verbose=0))[0], manifest)

    return step, load_ms


def _peak_rss_mib() -> float:
    """This process's peak resident set size in MiB.

    Linux keeps ``ru_maxrss`` across ``execve``, so a child started by a big parent would report the parent's
    footprint; ``VmHWM`` belongs to the process's own address space and starts afresh at exec. Elsewhere,
    ``ru_maxrss`` (bytes on macOS, KiB on the BSDs).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _child(args: dict) -> dict:
    x = np.load(args["inputs"])
    step, load_ms = _open_runtime(args["model"], args["format"], args["threads"])
    runs, batch = args["runs"], args["batch"]
    if args["format"] == KERAS:  # each predict() takes 0.1-0.5 s; more calls would not change the picture
        runs = min(runs, KERAS_MAX_RUNS)
    latency = _time_calls(step, x[:1], runs, warmup=max(3, runs // 10))
    batch_runs = max(3, min(runs, -(-20 * 32 // batch)))  # about 20 batches of 32 items' worth, at least 3 calls
    batched = _time_calls(step, x[:batch], batch_runs, warmup=2)
    return {"runs": runs, "load_ms": round(load_ms, 3), "p50_ms": round(_percentile(latency, 50), 4),
            "p90_ms": round(_percentile(latency, 90), 4), "p99_ms": round(_percentile(latency, 99), 4),
            "throughput": round(batch / (_percentile(batched, 50) / 1e3), 1), "rss_mib": round(_peak_rss_mib(), 1)}


def _child_main(argv: list[str]) -> None:
    try:
        result = _child(json.loads(argv[0]))
    except EdgecnnError as exc:
        result = {"error": str(exc)}
    print(json.dumps(result), flush=True)


# --- presentation ---------------------------------------------------------------------------------------------------

def bench_table(report: dict) -> str:
    """The terminal table, one row per format (like ``yolo benchmark``)."""
    from .report import table

    metric = report.get("metric") or "metric"
    headers = ["format", "status", "size MB", metric, "load ms", "p50 ms", "p90 ms", "p99 ms", "items/s",
               "RSS MiB"]
    rows = []
    for fmt, row in report["results"].items():
        rows.append([fmt, row["status"], *[row.get(k) for k in RESULT_KEYS]])
    lines = [f"{report['model']}: {report['task']}, batch-1 latency over {report['runs']} runs, throughput at "
             f"batch {report['batch']}, threads {report['threads'] or 'runtime default'}; metric on "
             f"{report['inputs']}" + (f" (n={report['n']})" if report.get("n") else ""), table(headers, rows)]
    errors = [f"{fmt}: {row['error']}" for fmt, row in report["results"].items() if row.get("error")]
    return "\n".join(lines + errors + list(report.get("notes", [])))


def plot(report: dict, path: str | os.PathLike) -> Path:
    """A PNG with two bar charts per format: median batch-1 latency and file size."""
    from .errors import require

    require("matplotlib", "train", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {fmt: r for fmt, r in report["results"].items() if r.get("p50_ms") is not None}
    if not rows:
        raise ModelError("no format ran, so there is nothing to plot")
    names = list(rows)
    p50 = [rows[f]["p50_ms"] for f in names]
    sizes = [rows[f]["size_mb"] or 0.0 for f in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(min(14.0, 4 + 1.4 * len(names)), 4))
    left.bar(names, p50, color="#4c72b0")  # medians only: on a busy machine p90 whiskers dwarf the bars
    left.set_ylabel("median latency at batch 1, ms")
    if max(p50) / max(min(p50), 1e-9) > 30:
        left.set_yscale("log")
    right.bar(names, sizes, color="#dd8452")
    right.set_ylabel("file size, MB")
    for axis, values, unit in ((left, p50, "ms"), (right, sizes, "MB")):
        for i, value in enumerate(values):
            axis.annotate(f"{value:.3g}", (i, value), ha="center", va="bottom", fontsize=8)
        axis.tick_params(axis="x", rotation=20)
    fig.suptitle(f"{Path(report['model']).name} ({report['task']})")
    fig.tight_layout()
    from .figures import save_figure

    return save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
