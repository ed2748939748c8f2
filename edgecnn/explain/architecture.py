"""Section 1 (the seed's slide 2): every layer with its output shape, parameters, multiply-accumulates and the time
it takes on this CPU.

Shapes, parameters and MACs come from the ONNX graph run once on the first input (:mod:`.graph`); latency from
onnxruntime's own profiler over the file the device runs, so the numbers are those of the optimised graph
(onnxruntime fuses a convolution with its activation, and adds layout reorders of its own: those are listed as
such). The profiler needs no ``onnx`` package, so a runtime-only install still gets the latency columns.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import figures
from .graph import MAC_OPS, PLUMBING, Graph, layer_name
from .page import Section
from .subject import TRAIN_EXTRA, Subject

#: Profiled runs after warm-up; the mean per layer is reported.
PROFILE_RUNS = 50
WARMUP_RUNS = 5
RUNTIME_OWN = "onnxruntime's own layout reorders"


def profile(onnx_path: Path, inputs: np.ndarray, runs: int = PROFILE_RUNS, warmup: int = WARMUP_RUNS) -> dict:
    """Median microseconds per run, per profiled node and of the whole run, from onnxruntime's profiler.

    Returns ``{"run_us": float, "nodes": {name: (op type, us)}, "threads": int}``. Warm-up runs are left out, and
    medians keep a run disturbed by another process on a shared CPU from moving the numbers.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(scratch, "profile")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: inputs}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    start = model_runs[warmup]["ts"] if len(model_runs) > warmup else 0
    durations: dict[str, list] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < start:
            continue
        name = event["name"][:-len("_kernel_time")]
        durations.setdefault(name, [event.get("args", {}).get("op_name", "?")]).append(event["dur"])
    threads = options.intra_op_num_threads or os.cpu_count() or 1
    return {"run_us": float(np.median([e["dur"] for e in model_runs if e["ts"] >= start] or [0])),
            "nodes": {name: (op, float(np.median(times))) for name, (op, *times) in durations.items()},
            "threads": threads}


def _profile_layer(name: str, graph: Graph | None) -> str:
    """The layer a profiled node belongs to: the original node's, else the scope in its (fused) name."""
    if graph is not None and name in graph.layer_of:
        return graph.row_of(graph.by_name[name])
    layer = layer_name(name)
    if layer is None:
        return RUNTIME_OWN if name.startswith("Reorder") else PLUMBING
    return graph.row_for_layer(layer) if graph is not None else layer


def node_macs(node, tensors: dict) -> int:
    """Multiply-accumulates of one node for a batch of one (0 for anything that is not a Conv/MatMul/Gemm)."""
    if node.op_type not in MAC_OPS:
        return 0
    out = tensors.get(node.output[0])
    if out is None:
        return 0
    if node.op_type in ("Conv", "ConvTranspose"):
        weight = tensors.get(node.input[1])
        return int(np.prod(out.shape[1:]) * np.prod(weight.shape[1:])) if weight is not None else 0
    left = tensors.get(node.input[0])
    if left is None:
        return 0
    inner = left.shape[0] if node.op_type == "Gemm" and _trans_a(node) else left.shape[-1]
    return int(out.size * inner)


def _trans_a(node) -> bool:
    return any(a.name == "transA" and a.i for a in node.attribute)


def layer_rows(graph: Graph, tensors: dict, keras_types: dict[str, str]) -> list[dict]:
    """One dict per layer: name, type, output shape, parameters, MACs (batch of one)."""
    rows = []
    for name, nodes in graph.layers.items():
        last = nodes[-1].output[0]
        shape = tensors.get(last)
        ops = list(dict.fromkeys(n.op_type for n in nodes))
        rows.append({"layer": name, "type": keras_types.get(name) or " + ".join(ops[:4]) + (" …" if len(ops) > 4
                                                                                          else ""),
                     "output_shape": list(shape.shape) if shape is not None and name != PLUMBING else None,
                     "parameters": graph.parameters(nodes), "macs": sum(node_macs(n, tensors) for n in nodes)})
    return rows


def explain_architecture(subject: Subject, graph: Graph | None, tensors: dict | None, out: Path) -> Section:
    section = Section("architecture", "Architecture: layers, shapes, parameters, time",
                      "Slide 2: each layer turns a tensor of one shape into another; the parameters are what "
                      "training learnt, the multiply-accumulates and the time are what inference costs.")
    timing = profile(subject.onnx_path, subject.items[0].x)
    per_layer: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    for name, (op, us) in timing["nodes"].items():
        per_layer[_profile_layer(name, graph)] += us
        per_op[op] += us
    kernel_total = sum(per_layer.values()) or 1.0  # medians of parts: shares of their sum, not of the run
    keras_types = _keras_types(subject)
    if graph is not None and tensors is not None:
        rows = layer_rows(graph, tensors, keras_types)
    else:
        rows = [{"layer": name, "type": None, "output_shape": None, "parameters": None, "macs": None}
                for name in per_layer]
        section.absent("Layer shapes, parameters and multiply-accumulates are read from the ONNX graph with the "
                       f"onnx package: {TRAIN_EXTRA}.")
    listed = {r["layer"] for r in rows}
    rows += [{"layer": name, "type": "added by onnxruntime", "output_shape": None, "parameters": 0, "macs": 0}
             for name in per_layer if name not in listed]
    for row in rows:
        row["latency_us"] = round(per_layer.get(row["layer"], 0.0), 2)
        row["time_share"] = round(per_layer.get(row["layer"], 0.0) / kernel_total, 4)
    known = [r for r in rows if r["parameters"] is not None]
    totals = {"parameters": sum(r["parameters"] for r in known), "macs": sum(r["macs"] for r in known),
              "latency_us": round(timing["run_us"], 1), "threads": timing["threads"]}
    section.data = {"layers": rows, "totals": totals, "preprocessing": subject.preprocessing,
                    "time_by_op_type": {op: round(us / kernel_total, 4) for op, us in
                                        sorted(per_op.items(), key=lambda kv: -kv[1])}}
    section.table(["layer", "Keras layer / ONNX ops" if keras_types else "ONNX ops", "output shape", "parameters", "MACs", "µs",
                   "time"],
                  [[r["layer"], r["type"], _shape(r["output_shape"]), r["parameters"], r["macs"],
                    r["latency_us"], f"{r['time_share']:.1%}"] for r in rows])
    source = (subject.manifest.get("source") or {})
    keras_count = source.get("parameters")
    sentence = (f"Totals: {totals['parameters']:,} weights in the ONNX graph, {totals['macs']:,} multiply-"
                f"accumulates per input; one run takes {totals['latency_us'] / 1000:.2f} ms on this CPU "
                f"(onnxruntime, fp32, {timing['threads']} threads, median of {PROFILE_RUNS} profiled runs).")
    if keras_count and keras_count != totals["parameters"]:
        sentence += (f" Keras counted {keras_count:,} parameters: batch-norm keeps 4 numbers per channel that "
                     "the export folds into the convolutions, and non-weights such as shape constants differ.")
    section.text(sentence)
    section.text("Output shapes are those of the ONNX tensors for a batch of one; inside the graph 4-D tensors "
                 "are channels first (N, C, H, W), the order onnxruntime computes in.")
    section.table(["preprocessing", "value"], [[k, json.dumps(v) if not isinstance(v, str) else v]
                                               for k, v in subject.preprocessing.items()],
                  caption="Input preprocessing, from the manifest")
    if figures.available():
        section.figure(_time_figure(section.data["time_by_op_type"], out),
                       "Share of the run's kernel time per operator type (onnxruntime profiler, this CPU).")
    else:
        section.absent(f"The time-share chart needs matplotlib: {TRAIN_EXTRA}.")
    return section


def _shape(shape) -> str:
    return "—" if not shape else "×".join(str(d) for d in shape)


def _keras_types(subject: Subject) -> dict[str, str]:
    model = subject.keras_model()
    if model is None:
        return {}
    return {layer.name: type(layer).__name__ for layer in model.layers}


def _time_figure(shares: dict[str, float], out: Path) -> str:
    plt = figures.pyplot()
    items = list(shares.items())[:12]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(items) + 0.9))
    ax.barh([k for k, _ in items][::-1], [v * 100 for _, v in items][::-1], color="#4c72b0")
    for y, (_, v) in enumerate(items[::-1]):
        ax.text(v * 100, y, f" {v:.1%}", va="center", fontsize=8)
    ax.set_xlabel("% of kernel time")
    ax.set_xlim(0, max(v for _, v in items) * 118)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return figures.save(fig, out, "architecture-time.png")
