"""``make bench``: run every benchmark of issue 5 and write ``BENCHMARKS.md``.

Each section runs as its own process and hands back JSON, so that no section's imports (TensorFlow above all) or
memory leak into another's numbers; this script itself imports only the standard library, because Linux carries a
parent's peak RSS into the ``ru_maxrss`` of the processes it starts.

Sections: (1) whole process, ``edgecnn infer`` against a minimal onnxruntime script and the seed's Keras way;
(2) in process, the task classes against the raw runtimes on the identical tensor; (3) ``edgecnn bench`` for each
reference export in ``exported/``; (4) the text tokenizer against TextVectorization, and detection post-processing
alone, for the exports and modules that exist; (5) ``edgecnn serve`` under 16 concurrent clients
(``serve_load.py``). The targets of issue 5 are checked at the top.

Usage: python benchmarks/run.py [--out BENCHMARKS.md] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXPORTED = ROOT / "exported"
TARGETS = {"cli_vs_floor": 1.3, "seed_vs_cli": 15.0, "cli_rss_mib": 100.0, "in_process_b1": 1.10,
           "int8_size": 3.5, "detector_p50_ms": 5.0}
VERSIONS = ("edgecnn", "numpy", "pillow", "onnxruntime", "ai-edge-litert", "tensorflow-cpu", "tensorflow", "keras",
            "click")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_json(argv: list[str], timeout: float = 3600) -> dict | None:
    """Run a section; its last stdout line is JSON. A failing section is reported, not fatal."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        say(f"FAILED ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
        return None
    return json.loads(lines[-1])


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), None) if Path("/proc/meminfo").exists() else None
    versions = {}
    for dist in VERSIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(int(memory) / 2**20, 1) if memory else None,
            "platform": platform.platform(), "python": platform.python_version(), "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def exports() -> list[Path]:
    return sorted(p.parent for p in EXPORTED.glob("*/edgecnn.json"))


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- sections -------------------------------------------------------------------------------------------------------

def section_whole_process(data: dict | None) -> str:
    if not data:
        return "_not measured (the section failed; see the make bench log)_"
    rows = [[f"`{name}`", fmt(r["wall_s"], 3), fmt(r["cpu_s"], 3), fmt(r["rss_mib"], 1), r["runs"]]
            for name, r in data["results"].items()]
    ratios = data["ratios"]
    text = [(f"One PNG (`{Path(data['image']).name}`) classified by a fresh process, {data['rounds']} rounds in "
            "rotated order (the seed's way, which takes seconds, in a few of them spread over the run); medians; ratios "
            "are medians of per-round ratios of back-to-back runs. CPU = user + system "
            "time of the process, which a busy machine inflates less than wall time."), "",
            md_table(["process", "wall s", "CPU s", "peak RSS MiB", "runs"], rows), "",
            (f"- `edgecnn infer` / minimal script: **{ratios['edgecnn_vs_floor_wall']:.2f}×** wall, "
            f"{ratios['edgecnn_vs_floor_cpu']:.2f}× CPU")]
    if "blas_threads_before_vs_now_cpu" in ratios:
        text.append(f"- `edgecnn infer` with a BLAS thread per CPU (as before the command asked numpy's OpenBLAS for "
                    f"one) / `edgecnn infer`: **{ratios['blas_threads_before_vs_now_cpu']:.2f}×** CPU, "
                    f"{ratios['blas_threads_before_vs_now_wall']:.2f}× wall")
    if "seed_vs_edgecnn_wall" in ratios:
        text.append(f"- seed's way / `edgecnn infer`: **{ratios['seed_vs_edgecnn_wall']:.1f}×** wall, "
                    f"{ratios['seed_vs_edgecnn_cpu']:.1f}× CPU")
    imports = data.get("import_cpu_ms")
    if imports:
        total = sum(imports.values())
        text += ["", ("Where the start-up of `edgecnn infer` goes: CPU ms of each import on top of the ones above it "
                 "(medians over fresh interpreters). Everything above `click` is paid by the minimal script too."), "",
                 md_table(["import", "CPU ms", "share"],
                          [[name, fmt(ms, 1), f"{ms / total:.0%}"] for name, ms in imports.items()])]
    return "\n".join(text)


def section_in_process(data: dict | None) -> str:
    if not data:
        return "_not measured (the section failed; see the make bench log)_"
    rows = []
    for name, r in data["results"].items():
        for batch, b in r["batches"].items():
            rows.append([name, batch, fmt(b["edgecnn_us"], 1), fmt(b["raw_us"], 1), f"**{b['ratio']:.3f}**",
                         r["runtime"] if batch == "1" else "", fmt(r["classify_uint8_us"], 1) if batch == "1" else ""])
    return "\n".join([
        (f"`ImageClassifier.predict(x)` against the raw runtime on the identical preprocessed float32 tensor "
        f"({Path(data['model']).name}); calls alternate one by one, {data['rounds']} per side at batch 1 (a tenth "
        "at batch 64); medians in µs. The last column is `classify(uint8 array)`: decoding-free preprocessing, "
        "inference and top-k, for scale."), "",
        md_table(["format", "batch", "edgecnn µs", "raw µs", "ratio", "raw runtime", "classify(array) µs"], rows)])


def section_bench(name: str, data: dict | None) -> str:
    if not data:
        return f"_`edgecnn bench exported/{name}` failed; see the make bench log_"
    metric = data.get("metric") or "metric"
    rows = [[f, r["status"], fmt(r["size_mb"], 3), fmt(r["metric"], 4), fmt(r["load_ms"], 1), fmt(r["p50_ms"], 3),
             fmt(r["p90_ms"], 3), fmt(r["p99_ms"], 3), fmt(r["throughput"], 0), fmt(r["rss_mib"], 1)]
            for f, r in data["results"].items()]
    notes = [f"- {line}" for line in data.get("notes", [])]
    notes += [f"- {f}: {r['error']}" for f, r in data["results"].items() if r.get("error")]
    return "\n".join([
        f"`edgecnn bench exported/{name} --runs {data['runs']} --batch {data['batch']}` — {data['task']}, {metric} "
        f"on {data['inputs']}" + (f" (n={data['n']})" if data.get("n") else "") + "; latency at batch 1 through "
        "the task's preprocessed-input path, throughput at batch " + str(data["batch"]) + ", each format in its own "
        "process.", "",
        md_table(["format", "status", "size MB", metric, "load ms", "p50 ms", "p90 ms", "p99 ms", "items/s",
                  "peak RSS MiB"], rows), *([""] + notes if notes else [])])


def section_text(output: str | None) -> str:
    if output is None:
        return "_not measured: `benchmarks/tokenizer_throughput.py` or the bbc-news data is missing_"
    return "`python benchmarks/tokenizer_throughput.py` (identical ids checked before timing):\n\n```\n" + \
        output.strip() + "\n```"


def section_detection(data: dict | None) -> str:
    if not data:
        return "_not measured: there is no `exported/digit-detector` yet_"
    rows = [[r["image"], r["candidates"], r["detections"], fmt(r["decode_nms_us"], 1), r["stress_candidates"],
             r["stress_detections"], fmt(r["stress_decode_nms_us"], 1), fmt(r["inference_us"], 1)]
            for r in data["images"]]
    med = data["median"]
    low = data["stress_threshold"]
    return "\n".join([
        (f"`runtime/detection.py` decoding + {data.get('nms', 'class-wise')} NMS on the raw head outputs of the "
        "export's samples "
        f"({data['format']}), median of {data['rounds']} calls per image, at the manifest's score threshold "
        f"({data['threshold']}) and at {low} (many more candidates through NMS), beside the inference that produced "
        "them."), "",
        md_table(["sample", "cells > threshold", "detections", "decode+NMS µs", f"cells > {low}",
                  f"detections at {low}", f"decode+NMS µs at {low}", "inference µs"], rows), "",
        (f"Median: decode+NMS {med['decode_nms_us']:.0f} µs ({med['stress_decode_nms_us']:.0f} µs at {low}), "
        f"inference {med['inference_us']:.0f} µs.")])


def section_sizes(data: dict | None) -> str:
    if not data or not data.get("results"):
        return "_not measured (needs the flatbuffer schema of ai-edge-litert or TensorFlow)_"
    rows = [[name, fmt(r["onnx"] / 1e3, 1), fmt(r["file"] / 1e3, 1), fmt(r["buffers"] / 1e3, 1),
             fmt(r["quantization_params"] / 1e3, 1), fmt(r["structure"] / 1e3, 1), r["tensors"],
             f"**{r['ratio_file']:.2f}×**", f"{r['ratio_weights']:.2f}×"] for name, r in data["results"].items()]
    return "\n".join([
        ("`python benchmarks/tflite_size.py`: the bytes of `model.int8.tflite` by kind (kB). Weights and biases are "
        "the buffers; every quantized tensor also carries float32 scales and int64 zero points, one pair per "
        "output channel for per-channel weights; the rest is the flatbuffer graph, tensor names and signature."), "",
        md_table(["export", "model.onnx", "int8 .tflite", "weights+biases", "quant. params", "graph+names",
                  "tensors", "onnx / tflite", "onnx / weights"], rows)])


def section_serve(data: dict | None) -> str:
    if not data:
        return "_not measured (the section failed; see the make bench log)_"
    rows = [[name, r["task"], r["format"], r["answered"], r["errors"], fmt(r["p50_ms"], 1),
             fmt(r["p90_ms"], 1), fmt(r["p99_ms"], 1), fmt(r["max_ms"], 1), f"**{r['requests_per_s']:.0f}**",
             fmt(r.get("server_cpu_ms_per_request"), 2)] for name, r in data["results"].items()]
    requests = next(iter(data["results"].values()))["requests"]
    return "\n".join([
        (f"`python benchmarks/serve_load.py`: `edgecnn serve` with the three exports ({data['workers']} "
         f"workers, {data['threads_per_worker']} runtime thread(s) each) on 127.0.0.1, one model after the "
         f"other, each {requests} predict requests from {data['concurrency']} concurrent clients (threads of "
         f"one process, one keep-alive connection each) on the same {data['cpus']}-core machine: client and "
         "server share the cores. A request is one sample of the export (a PNG, or `{\"text\": ...}`), in "
         "turn; every answer must be 200, equal to the answer the sample got alone, and (classifiers) carry "
         "the label the file name gives: any other answer counts as an error. Latency is per request, send "
         "to last byte; server CPU is its user + system time over the answered requests. The server then got "
         f"SIGTERM and exited {data.get('server_exit_code')}."), "",
        md_table(["model", "task", "format", "answered", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms",
                  "requests/s", "server CPU ms/request"], rows)])


WORKERS_TARGETS = {"workers2_speedup": 1.7, "workers1_vs_bare": 1.15}


def section_workers(data: dict | None) -> str:
    """Issue 20: ``edgecnn infer DIR --workers N`` (benchmarks/workers.py)."""
    if not data:
        return "_not measured (benchmarks/workers.py failed; see the make bench log)_"
    rows = [[f"`{name}`", fmt(r["wall_s"], 2), fmt(r["cpu_s"], 2), f"**{r['images_per_s']:.0f}**",
             ", ".join(f"{w:.2f}" for w in r["walls"])] for name, r in data["results"].items()]
    speedup, floor = data["ratios"]["workers2_speedup"], data["ratios"]["workers1_vs_bare"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    load = " / ".join(f"{v:.1f}" for v in data["load_before"]), " / ".join(f"{v:.1f}" for v in data["load_after"])
    return "\n".join([
        (f"`python benchmarks/workers.py --images {data['images']} --rounds {data['rounds']}`: a folder of "
         f"{data['images']:,} 28×28 PNGs (digits samples with seeded noise), `{data['model']}` with a plain resize "
         "as preprocessing (no ink framing: the same work as the bare loop), each contender a whole process "
         f"printing one line per image, {data['rounds']} rounds in rotated order after one untimed run each; "
         f"medians; ratios are medians of per-round ratios. {data['cpus']} CPUs ({data['physical_cores']} "
         f"physical cores, `--workers auto`). Load average (1/5/15 min) before: {load[0]}, after: {load[1]}."), "",
        md_table(["process", "wall s", "CPU s", "images/s", "wall s per round"], rows), "",
        md_table(["target (issue 20)", "measured", "verdict"], [
            ["`--workers 2` ≥ 1.7× the throughput of `--workers 1` (whole processes, start-up included)",
             f"{speedup:.2f}×", verdict(speedup >= WORKERS_TARGETS["workers2_speedup"])],
            *([[("the same, once started (10,000 less 32 images: start-up "
                 f"{data['startup_s']['1']:.2f} s and {data['startup_s']['2']:.2f} s)"),
                f"{data['ratios']['workers2_steady_speedup']:.2f}×",
                verdict(data["ratios"]["workers2_steady_speedup"] >= WORKERS_TARGETS["workers2_speedup"])]]
              if "workers2_steady_speedup" in data["ratios"] else []),
            *([[("ceiling: two `--workers 1` processes started together, one per half of the folder, nothing "
                 "shared"),
                f"{data['ratios']['two_processes_speedup']:.2f}×", "the most a split over processes gets here"]]
              if "two_processes_speedup" in data["ratios"] else []),
            ["`--workers 1` within 1.15× of a bare onnxruntime loop (wall)",
             f"{floor:.2f}× (CPU {data['ratios'].get('workers1_vs_bare_cpu', float('nan')):.2f}×)",
             verdict(floor <= WORKERS_TARGETS["workers1_vs_bare"])],
            ["the same, against the loop with one runtime thread (the faster floor)",
             (f"{data['ratios'].get('workers1_vs_bare_1thread', float('nan')):.2f}× (CPU "
              f"{data['ratios'].get('workers1_vs_bare_1thread_cpu', float('nan')):.2f}×)"),
             verdict(data["ratios"].get("workers1_vs_bare_1thread", 9) <= WORKERS_TARGETS["workers1_vs_bare"])]]),
        "",
        ("Reading the numbers: `edgecnn infer` over many inputs runs one runtime thread per process (each worker "
         "of `--workers 2`, and `--workers 1`); the first bare loop gets onnxruntime's default pool, one thread per "
         "physical core, whose threads spin between calls: CPU they burn, more when the cores are shared (a load "
         "average above the CPU count means other processes take part of both cores, and wall times per round "
         "move with it). Where the time goes, per image, measured in this process with one runtime thread each "
         "(CPU ms per image): the bare loop, edgecnn's run (images 32 per model call), then its steps; its decode "
         "adds checks the bare loop skips (stat, warnings kept off stderr, pixel limit, EXIF, colour mode):"), "",
        md_table(["step", "CPU ms / image"], [[name, fmt(ms, 3)] for name, ms in data.get("per_image_cpu_ms",
                                                                                        {}).items()])])


def section_ray(data: dict | None) -> str:
    """Issue 20: Ray Data's map_batches against ``edgecnn infer --workers 2`` (benchmarks/ray_infer.py)."""
    if not data:
        return "_not measured (ray is not installed, or benchmarks/ray_infer.py failed; see the make bench log)_"
    rows = [[name, fmt(r["wall_s"], 2), f"**{r['images_per_s']:.0f}**", ", ".join(f"{w:.2f}" for w in r["walls"])]
            for name, r in data["results"].items()]
    load = " / ".join(f"{v:.1f}" for v in data["load_before"]), " / ".join(f"{v:.1f}" for v in data["load_after"])
    return "\n".join([
        (f"`python benchmarks/ray_infer.py --images {data['images']} --rounds {data['rounds']}`: the folder and "
         "model copy of the section above; `edgecnn infer DIR --workers 2` against "
         f"`edgecnn.integrations.ray.infer_dataset` on a local Ray {data['ray']} (`ray.init(num_cpus=2)`, started "
         f"once before the rounds, {data['ray_init_s']:.1f} s; 2 actors; Parquet written), {data['rounds']} rounds "
         "in rotated order after one untimed run each; medians. Both give the same answers (`tests/test_ray.py`). "
         f"Load average before: {load[0]}, after: {load[1]}."), "",
        md_table(["contender", "wall s", "images/s", "wall s per round"], rows), "",
        (f"Ray is {data['ray_vs_workers2_wall']:.1f}× slower on one machine: there the engine is overhead "
         "(scheduler, object store, Arrow conversions, actors that start and open the model per dataset); it buys "
         "the same code on many machines, object-store inputs and Parquet outputs.")])


INT8_TARGETS = {"onnx": 0.67, "tflite": 0.5}


def section_int8(speed: dict | None, size: dict | None) -> str:
    """Issue 17: int8 against fp32 at batch 1 (benchmarks/int8_speed.py) and what shrinks int8 TFLite files
    (benchmarks/int8_size.py)."""
    if not speed:
        return "_not measured (benchmarks/int8_speed.py failed; see the make bench log)_"
    net = speed["mobilenetv2"]
    threads = list(net["threads"])

    def ratio(row: dict) -> str:
        return f"**{row['ratio']:.2f}×** ({row['ratio_p10']:.2f}–{row['ratio_p90']:.2f})" if "ratio" in row else "1"

    def usable(count: str) -> bool:
        """A thread count whose fp32 timing the load did not swamp: with more threads than free cores a call
        waits for a core (p90 tens of times the p50), and no ratio measured then says anything about int8."""
        row = net["threads"][count]["onnx fp32"]
        return row["p90_ms"] <= 3 * row["p50_ms"]

    def met(key: str, target: float) -> list[str]:
        cells = [ratio(net["threads"][t][key]) + ("" if usable(t) else " (swamped by load)") for t in threads]
        ok = [net["threads"][t][key]["ratio"] <= target for t in threads if usable(t)]
        return cells + ["n/a" if not ok else "**met**" if all(ok) else "**missed**"]

    load = speed.get("load")
    doc = [(f"`python benchmarks/int8_speed.py --rounds {net['rounds']}`: {net['model']}, calibrated on "
            f"{net['calibration']}, exported with edgecnn's own functions; at batch 1, every file with the same "
            "thread count, one call of each per round in rotated order; ratios are medians of the per-round ratios "
            "to the fp32 sibling, with their 10th–90th percentile spread (the machine is shared: the spread says "
            "how much load moved them)."
            + (f" Load average (1/5/15 min) before: {' / '.join(f'{v:.1f}' for v in load['before'])}, after: "
               f"{' / '.join(f'{v:.1f}' for v in load['after'])}; a thread count whose fp32 p90 exceeds 3× its "
               "p50 was swamped by other processes and does not count in the verdict." if load else "")), "",
           md_table(["target (issue 17)"] + [f"{t} thread(s)" for t in threads] + ["verdict"], [
               ["MobileNetV2 96×96: `model.int8.onnx` p50 ≤ 0.67× `model.onnx`"] + met("int8 U8S8 (edgecnn now)",
                                                                                   INT8_TARGETS["onnx"]),
               ["MobileNetV2 96×96: `model.int8.tflite` p50 ≤ 0.5× `model.tflite`"] + met("tflite-int8",
                                                                                     INT8_TARGETS["tflite"])]),
           "", "### MobileNetV2 96×96: each recipe side by side", ""]
    rows = []
    for name in net["threads"][threads[0]]:
        shape = net["structure"].get(net["files"].get(name), {})
        rows.append([name, fmt(net["size_mb"][name], 2)] + [
            f"{fmt(net['threads'][t][name]['p50_ms'], 3)} ({fmt(net['threads'][t][name]['p10_ms'], 2)}–"
            f"{fmt(net['threads'][t][name]['p90_ms'], 2)})" for t in threads] + [
            ratio(net["threads"][t][name]) for t in threads] + [
            f"{shape['float_conv']} / {shape['qlinear_conv']}" if shape else "-",
            str(shape.get("quantize_dequantize", "-")) if shape else "-"])
    doc += [md_table(["file / session", "MB"] + [f"p50 ms, {t} thr. (p10–p90)" for t in threads] +
                     [f"vs fp32, {t} thr." for t in threads] + ["float Conv / QLinearConv", "Q+DQ left"], rows), ""]
    first = net["threads"][threads[0]]
    before, now = net["structure"]["s8s8.onnx"], net["structure"]["u8s8.onnx"]
    doc += [("Last two columns: how onnxruntime runs the file after its graph optimizations (ORT_ENABLE_EXTENDED "
             "graph written out): Convs left in float between QuantizeLinear/DequantizeLinear, against integer "
             "kernels, and the Q/DQ nodes left."), "", "What this says (ratios at " + threads[0] + " thread):", "",
            (f"- **S8S8 was the cause.** onnxruntime (1.32) fuses Q/DQ around int8 activations into integer kernels "
             "only where `session.qdqisint8allowed` is on, by default on ARM only: on x86-64 "
             f"{before['float_conv']} of {before['float_conv'] + before['qlinear_conv']} Convs and the residual Adds "
             f"stayed float between {before['quantize_dequantize']} Q/DQ nodes, "
             f"{first['int8 S8S8 (edgecnn before)']['ratio']:.2f}× fp32. Forcing the fusion on x86 is worse "
             f"({first['int8 S8S8, qdqisint8allowed=1']['ratio']:.2f}×, as S8S8 QOperator): the S8S8 kernels are "
             "slow there."),
            (f"- **U8S8, the recipe now** (`quantize_onnx(activations=\"uint8\")`): {now['qlinear_conv']} of "
             f"{now['qlinear_conv'] + now['float_conv']} Convs fused, "
             f"{first['int8 U8S8 (edgecnn now)']['ratio']:.2f}×. Activations are asymmetric, so uint8 is the same "
             "grid as int8 with the zero point moved by 128: the committed exports re-quantized give the very same "
             "accuracy (table below)."),
            (f"- `quant_pre_process` is worth it ({first['int8 U8S8, without quant_pre_process']['ratio']:.2f}× "
             "without); the graph optimization level must stay ORT_ENABLE_ALL, the default edgecnn's runtime uses "
             f"(fp32 at EXTENDED: {first['onnx fp32, ORT_ENABLE_EXTENDED']['ratio']:.2f}×, no NCHWc kernels). "
             f"Per-tensor weights ({first['int8 U8S8, per-tensor weights']['ratio']:.2f}×) cost the detector 2.4 "
             "pts of int8 agreement (0.977 → 0.953 in ONNX); reduce_range "
             f"({first['int8 U8S8, reduce_range']['ratio']:.2f}×) is for x86 CPUs without VNNI and cost the "
             "detector 0.16 pt mAP@0.5; QOperator is no faster than QDQ "
             f"({first['int8 U8S8, QOperator']['ratio']:.2f}×). All three stay off; QDQ stays the format."),
            ("- Threads: on this 2-core machine shared with other jobs, two intra-op threads wait for a core "
             "(p90 tens of ms) whatever the file; one thread gives the comparable numbers. The TFLite int8 file "
             "(converter's full-integer recipe, XNNPACK) was already at half the fp32 time and is unchanged."), "",
            "### The committed exports", "",
            ("fp32 against the committed int8 files and against `model.onnx` quantized again with the current "
             "recipe (U8S8; same calibration as `edgecnn export`: 200 training examples, seed 0). Accuracy on the "
             "held-out split through edgecnn's runtime; the gate is the export's (agreement ≥ 98 % with fp32, or "
             "mAP@0.5 at most 2 pts below)."), ""]
    rows = []
    for name, data in speed.get("exports", {}).items():
        metric = "map50" if data["task"] == "object-detection" else "accuracy"
        acc = data["accuracy"]
        for t, timed in data["threads"].items():
            rows.append([name, t, fmt(timed["onnx"]["p50_ms"], 3), ratio(timed["onnx-int8 committed (S8S8)"]),
                         ratio(timed["onnx-int8 re-quantized (U8S8)"]), fmt(timed["tflite"]["p50_ms"], 3),
                         ratio(timed["tflite-int8"]),
                         f"{metric} {acc['committed'][metric]:.4f} → {acc['re-quantized'][metric]:.4f} "
                         f"(fp32 {acc['onnx'][metric]:.4f}), agreement {acc['committed']['agreement']:.3f} → "
                         f"{acc['re-quantized']['agreement']:.3f}; gate "
                         + ("passed" if acc["re-quantized_passes_gate"] else "**failed**"),
                         (f"{data['structure']['committed']['float_conv']} → "
                          f"{data['structure']['re-quantized']['float_conv']}")])
    doc += [md_table(["export", "threads", "onnx p50 ms", "committed int8 / fp32", "re-quantized int8 / fp32",
                      "tflite p50 ms", "tflite-int8 / fp32", "onnx-int8: committed → re-quantized",
                      "float Convs left"], rows), ""]
    report = net.get("report") or {}
    if report:
        doc += ["### `edgecnn quantize-report` on the MobileNetV2 int8 files", "",
                ("The worst rows of `layer_errors` (the report's code) on 16 crops it was not calibrated on. With "
                 "random weights and untrained batch-norm statistics the activations shrink block after block "
                 "(the last blocks' are ~1e-10), where no 8-bit grid keeps them: the report says so, and it is "
                 "also why this model's accuracy means nothing here - only its speed."), ""]
        for file, worst in report.items():
            doc += [f"`{file}`:", "", md_table(["layer", "op", "kind", "SQNR dB", "vs fp32 dB", "max abs err"], [
                [f"`{r['layer'].split(';')[0]}`", r["op"], r["kind"], fmt(r["sqnr_db"], 1),
                 fmt(r["fp32_sqnr_db"], 1), f"{r['max_abs_error']:.2e}" if r["max_abs_error"] is not None else "-"]
                for r in worst]), ""]
    doc += ["### Sizes: what would make every `model.int8.tflite` ≥ 3.5× smaller than `model.onnx`", ""]
    if not size:
        doc.append("_not measured (benchmarks/int8_size.py failed)_")
        return "\n".join(doc)
    doc += [("`python benchmarks/int8_size.py`: each file rewritten as edgecnn's writer or another converter "
             "setting would have written it, sizes in kB, accuracy through edgecnn's runtime on the held-out split, "
             "the gate as above against the fp32 `.tflite`. Per-tensor weights: one scale per weight tensor (the "
             "largest of its channels), biases requantized to match (`--per-tensor`); edgecnn's writer "
             "(`export/tflite.py` `compact`, what export writes since issue 17): each distinct quantization array "
             "stored once, tensor names cut to the first fused op plus a hash, the same numbers."), ""]
    rows = []
    for name, data in size["results"].items():
        metric = "map50" if data["task"] == "object-detection" else "accuracy"
        for variant, r in data["variants"].items():
            if variant == "repacked":
                continue
            rows.append([name, variant, fmt(r["file"] / 1e3, 1), fmt(r["buffers"] / 1e3, 1),
                         fmt(r["quantization_params"] / 1e3, 1), fmt((r["structure"] + r.get("names", 0)) / 1e3, 1),
                         f"**{r['ratio']:.2f}×**", f"{metric} {r[metric]:.4f} (fp32 {data['fp32'][metric]:.4f})",
                         fmt(r["agreement"], 3), "passed" if r["passes_gate"] else "**failed**"])
    doc += [md_table(["export", "variant", "int8 .tflite kB", "weights+biases", "quant. params", "graph+names",
                      "onnx / tflite", "metric", "agreement", "gate"], rows)]
    doc += ["", ("- Where the detector's overhead comes from: its convolutions (2,126 output channels in all) "
                 "are per-channel, so each output channel carries a float32 scale and an int64 zero point, twice "
                 "(weights and int32 bias): 51.6 kB, 21 % of the converter's file, of which 34 kB are zero points "
                 "(all 0); the converter's tensor names (every fused TensorFlow op joined by ';') are another 12 kB. "
                 "LiteRT needs as many zero points as scales, so edgecnn's writer stores each distinct array once "
                 "instead (a flatbuffer may point many tensors at one vector) and shortens the names."),
            ("- Per-channel cannot reach 3.5× on the detector without changing numbers: its int8 weights and int32 "
             "biases (169.8 kB) plus one float32 scale per channel for each (17.2 kB) leave 8 kB for the graph "
             "under onnx / 3.5, and the graph alone is 15 kB. `--per-tensor` with edgecnn's writer reaches it "
             "(opt-in: an accuracy trade the gates judge; on the committed detector per-tensor weights lowered "
             "int8 box agreement 0.976 → 0.951 with mAP@0.5 within the gate).")]
    return "\n".join(doc)


# --- targets --------------------------------------------------------------------------------------------------------

def targets(whole: dict | None, inproc: dict | None, benches: dict[str, dict | None]) -> str:
    rows = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**missed**")

    if whole:
        r = whole["ratios"]
        rows.append(["`edgecnn infer x.png` ≤ 1.3× the minimal onnxruntime script (wall)",
                     f"{r['edgecnn_vs_floor_wall']:.2f}× (CPU {r['edgecnn_vs_floor_cpu']:.2f}×)",
                     verdict(r["edgecnn_vs_floor_wall"] <= TARGETS["cli_vs_floor"])])
        if "seed_vs_edgecnn_wall" in r:
            rows.append(["`edgecnn infer` ≥ 15× faster than the seed's way (wall)",
                         f"{r['seed_vs_edgecnn_wall']:.1f}× (CPU {r['seed_vs_edgecnn_cpu']:.1f}×)",
                         verdict(r["seed_vs_edgecnn_wall"] >= TARGETS["seed_vs_cli"])])
        rss = whole["results"]["edgecnn infer"]["rss_mib"]
        rows.append(["`edgecnn infer` peak RSS ≤ 100 MiB", f"{rss:.1f} MiB", verdict(rss <= TARGETS["cli_rss_mib"])])
    if inproc:
        worst = max((b["ratio"], f) for f, r in inproc["results"].items() for k, b in r["batches"].items()
                    if k == "1")
        onnx = inproc["results"].get("onnx", {}).get("batches", {}).get("1", {}).get("ratio")
        rows.append(["in process, batch 1 ≤ 1.10× raw `session.run`",
                     f"onnx {onnx:.3f}× (worst format: {worst[1]} {worst[0]:.3f}×)" if onnx else "-",
                     verdict(onnx is not None and onnx <= TARGETS["in_process_b1"])])
    for name, data in benches.items():
        if not data:
            continue
        res = data["results"]
        if "onnx" in res and "tflite-int8" in res and res["tflite-int8"]["size_mb"]:
            ratio = res["onnx"]["size_mb"] / res["tflite-int8"]["size_mb"]
            rows.append([f"{name}: `model.int8.tflite` ≥ 3.5× smaller than `model.onnx`", f"{ratio:.2f}×",
                         verdict(ratio >= TARGETS["int8_size"])])
        if data["task"] == "object-detection":
            timed = [(r["p50_ms"], f) for f, r in res.items() if r.get("p50_ms") is not None and f != "keras"]
            if timed:
                best = min(timed)
                rows.append([f"{name}: fastest format p50 at batch 1 incl. decode+NMS ≤ 5 ms",
                             f"{best[1]} {best[0]:.2f} ms", verdict(best[0] <= TARGETS["detector_p50_ms"])])
    if not any(d and d["task"] == "object-detection" for d in benches.values()):
        rows.append(["digit detector p50 ≤ 5 ms", "no `exported/digit-detector` yet", "n/a"])
    return md_table(["target (issue 5)", "measured", "verdict"], rows)


def section_transfer(data: dict | None) -> str:
    """Issue 16: seed-cnn pretrained on digits 0-4 and fine-tuned on 5-9 (10 and 3 images per class) against the
    same net from scratch on those images; benchmarks/transfer.py words its own JSON (``markdown``)."""
    if not data or "settings" not in data:
        return "_not measured (benchmarks/transfer.py failed; see the make bench log)_"
    sys.path.insert(0, str(HERE))
    from transfer import markdown  # standard library only at import time, as this script

    return markdown(data)


def tokenizer(python: str, quick: bool) -> str | None:
    """The text helper's tokenizer benchmark, when it and the text runtime exist; its printed lines."""
    if not (HERE / "tokenizer_throughput.py").is_file() or not (ROOT / "edgecnn" / "runtime" / "text.py").is_file():
        return None
    done = subprocess.run([python, str(HERE / "tokenizer_throughput.py"), "--repeat", "1" if quick else "3"],
                          cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        say(f"tokenizer benchmark failed:\n{done.stderr[-1500:]}")
        return None
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, not for the record)")
    parser.add_argument("--only-exports", nargs="*", metavar="NAME",
                        help="re-measure only these exports (all, when no name is given) and the detection "
                             "post-processing; keep the other sections from the JSON of the previous run")
    args = parser.parse_args()
    python = sys.executable
    quick = args.quick
    info = machine()
    load_before = os.getloadavg()
    previous = {}
    if args.only_exports is not None:
        previous = json.loads(Path(args.out).with_suffix(".json").read_text())
        say(f"keeping whole-process, in-process and tokenizer results of {previous['machine']['date']}")

    kept_from = previous.get("kept_from") or (previous and {"date": previous["machine"]["date"],
                                                          "load_before": previous["load_before"]})

    def section(key: str, measure):
        return previous[key] if args.only_exports is not None else measure()

    say("1/4 whole process: edgecnn infer vs minimal onnxruntime script vs the seed's way")
    whole = section("whole_process", lambda: run_json([
        python, str(HERE / "whole_process.py"), "--rounds", "4" if quick else "15", "--seed-rounds",
        "1" if quick else "3"]))
    say("2/4 in process: task classes vs raw runtimes")
    inproc = section("in_process", lambda: run_json([python, str(HERE / "in_process.py"), "--rounds",
                                                     "200" if quick else "2000"]))
    benches: dict[str, dict | None] = {}
    for folder in exports():
        if args.only_exports and folder.name not in args.only_exports and folder.name in previous.get("bench", {}):
            benches[folder.name] = previous["bench"][folder.name]
            continue
        say(f"3/4 edgecnn bench {folder.relative_to(ROOT)}")
        benches[folder.name] = run_json([python, "-m", "edgecnn.cli", "bench", str(folder.relative_to(ROOT)),
                                         "--runs", "50" if quick else "300", "--json"])
    say("4/4 tokenizer and detection post-processing")
    text_output = section("tokenizer", lambda: tokenizer(python, quick))
    detection = None
    if (EXPORTED / "digit-detector" / "edgecnn.json").is_file() and (ROOT / "edgecnn/runtime/detection.py").is_file():
        detection = run_json([python, str(HERE / "detection_postprocess.py"), "--rounds", "50" if quick else "300"])
    sizes = run_json([python, str(HERE / "tflite_size.py")])
    say("int8 against fp32: MobileNetV2 recipes, the committed exports, int8 TFLite sizes (issue 17)")
    int8_speed = run_json([python, str(HERE / "int8_speed.py"), "--rounds", "100" if quick else "600"])
    int8_size = run_json([python, str(HERE / "int8_size.py")])
    say("edgecnn serve under load: 16 concurrent clients on 127.0.0.1")
    serve_load = run_json([python, str(HERE / "serve_load.py"), "--requests", "300" if quick else "2000",
                           "--concurrency", "16"])
    say("edgecnn infer --workers 1 and 2 against a bare onnxruntime loop on 10,000 PNGs (issue 20)")
    workers = run_json([python, str(HERE / "workers.py"), "--images", "2000" if quick else "10000", "--rounds",
                        "1" if quick else "3"])
    ray_infer = None
    if importlib.util.find_spec("ray") is not None:
        say("Ray Data against edgecnn infer --workers 2 on the same PNGs (issue 20)")
        ray_infer = run_json([python, str(HERE / "ray_infer.py"), "--images", "2000" if quick else "10000",
                              "--rounds", "1" if quick else "3"])
    say("transfer learning: digits 0-4 -> 5-9 with 10 and 3 images per class, against scratch (issue 16)")
    transfer = run_json([python, str(HERE / "transfer.py"), "--seeds", "2" if quick else "5"])
    load_after = os.getloadavg()

    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    doc = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python benchmarks/run.py`) on {info['date']}"
        + (" — **quick smoke run, not for the record**" if quick else "")
        + (f"; sections 1, 2 and the tokenizer were measured on {kept_from['date']} (load average "
           f"{' / '.join(f'{v:.1f}' for v in kept_from['load_before'])}) and kept: `--only-exports` re-measured the "
           "exports" if previous else "") + ".",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; {info['platform']}",
        f"- Python {info['python']}; {versions}",
        (f"- load average (1/5/15 min) before: {' / '.join(f'{v:.1f}' for v in load_before)}, after: "
        f"{' / '.join(f'{v:.1f}' for v in load_after)}. The machine is shared: absolute times move with the load, "
        "so every comparison is measured side by side, interleaved, and reported as medians and ratios."),
        "",
        "## Targets",
        "",
        targets(whole, inproc, benches),
        "",
        "## 1. Whole process: `edgecnn infer` vs the floor vs the seed's way",
        "",
        section_whole_process(whole),
        "",
        "## 2. In process: task classes vs raw runtimes",
        "",
        section_in_process(inproc),
        "",
        "## 3. Per task and format (`edgecnn bench`)",
        "",
    ]
    for name, data in benches.items():
        doc += [f"### {name}", "", section_bench(name, data), ""]
    if not benches:
        doc += ["_no exports in `exported/`_", ""]
    doc += ["### Why `model.int8.tflite` is not 4× smaller", "", section_sizes(sizes), ""]
    doc += ["## 4. Tokenizer and detection post-processing", "", "### Tokenizer vs TextVectorization", "",
            section_text(text_output), "", "### Detection post-processing alone", "", section_detection(detection),
            "", "## `edgecnn serve` under load", "", section_serve(serve_load),
            "", "## 5. int8 against fp32: speed and size (issue 17)", "", section_int8(int8_speed, int8_size),
            "", "## `edgecnn infer --workers`: every core (issue 20)", "", section_workers(workers),
            "", "## Ray Data against `--workers 2` (issue 20)", "", section_ray(ray_infer),
            "", "## Transfer learning from a few images per class (issue 16)", "", section_transfer(transfer),
            "", "## What was done for these numbers, and what was left", "",
            ("- Start-up: `edgecnn infer` chose its default format from package metadata; `importlib.metadata` "
            "alone cost tens of ms of CPU per run. It now asks `importlib.util.find_spec`, and metadata is read only "
            "where versions are reported (`edgecnn info`). The CLI imports click and the standard library at the "
            "top, each command imports what it uses (tests: `test_runtime_line.py`, `test_latency_parity.py`)."),
            ("- The sha256 check of the model file on every load is kept: it is what turns a truncated or swapped "
            "file into a one-line error, and it costs a few ms (the hashlib import plus about 1 ms per MB)."),
            ("- One runtime session/interpreter per task object, reused for every input; the LiteRT backend binds "
            "each tensor's quantization parameters once instead of looking them up on every call."),
            ("- Threads: for one input, each runtime's default (onnxruntime one intra-op thread per physical core); "
            "on a busy machine `--threads 1` shortens onnxruntime's tail latency (its spinning worker waits for a "
            "core) without changing the median. A run over many inputs uses one thread per process (the cores go to "
            "`--workers`; see issue 20's section). Both `infer` and `bench` take `--threads`."),
            ("- The ratios against the seed's way depend on TensorFlow's import time and on load: with more processes "
            "than cores the single-threaded `edgecnn infer` waits for a core longer than multi-threaded TensorFlow "
            "does, so under load the wall ratio understates what a quiet machine shows (compare the CPU ratio)."),
            ("- `model.int8.tflite` holds int8 weights (4× smaller than float32) but also int32 biases, per-channel "
            "scales and int64 zero points, and the graph; small models with many thin layers pay relatively more "
            "(see the size breakdown above)."),
            "", "## How to reproduce", "",
            ("`make bench` (installs the venv if needed, trains `runs/digits-cnn/model.keras` for the seed's way when "
            "it is missing, then runs `benchmarks/run.py`). Each section also runs alone and prints JSON: "
            "`benchmarks/whole_process.py`, `benchmarks/in_process.py`, `edgecnn bench DIR --json`, "
            "`benchmarks/tokenizer_throughput.py`, `benchmarks/detection_postprocess.py`."), ""]
    Path(args.out).write_text("\n".join(doc), encoding="utf-8")
    raw = Path(args.out).with_suffix(".json")
    raw.write_text(json.dumps({"machine": info, "load_before": load_before, "load_after": load_after,
                               "whole_process": whole, "in_process": inproc, "bench": benches,
                               "detection_postprocess": detection, "tokenizer": text_output, "tflite_size": sizes,
                               "serve_load": serve_load,
                               "int8_speed": int8_speed, "int8_size": int8_size, "transfer": transfer, "workers": workers,
                               "kept_from": kept_from or None},
                              indent=1) + "\n")
    say(f"wrote {args.out} and {raw.name}")


if __name__ == "__main__":
    main()
