"""``edgecnn info``: what an export holds and what this machine can run (stdlib + manifest only, no model load)."""

from __future__ import annotations

import os
import platform
import sys

from .. import manifest as manifest_io
from .backends import available_runtimes


def describe_platform() -> dict:
    """Platform, Python, installed runtimes, CPU count and the default thread setting."""
    cpus = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        usable = cpus
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "runtimes": available_runtimes(),
        "cpu_count": cpus,
        "usable_cpus": usable,
        "default_threads": "runtime default (onnxruntime: one per physical core; LiteRT: chosen by the "
                           "interpreter); set --threads to pin",
    }


def describe_export(model_dir: str) -> dict:
    """The manifest's summary plus the files' sizes and which of them this machine can run."""
    from .tasks import runnable_formats

    manifest = manifest_io.read(model_dir)
    runnable = set(runnable_formats(manifest))
    files = {fmt: {"path": entry["path"], "size": entry.get("size"), "precision": entry.get("precision"),
                   "runnable_here": fmt in runnable}
             for fmt, entry in manifest["files"].items()}
    validation = (manifest.get("validation") or {}).get("results", {})
    return {"model": str(manifest.folder), "name": manifest.get("name"), "task": manifest.task,
            "labels": manifest.labels, "input": manifest["input"], "preprocessing": manifest["preprocessing"],
            "dataset": manifest.get("dataset"), "files": files, "validation": validation,
            "versions": manifest.get("versions"), "runtimes": available_runtimes()}


def format_description(data: dict) -> str:
    """Human-readable lines for either kind of description."""
    from ..report import metrics_table, table

    if "task" not in data:
        return "\n".join(f"{key:16} {value}" for key, value in data.items())
    lines = [f"{data['model']}: {data['task']}, {len(data['labels'])} labels "
             f"({', '.join(data['labels'][:12])}{', ...' if len(data['labels']) > 12 else ''})",
             f"input: {data['input']}",
             f"dataset: {(data.get('dataset') or {}).get('name')} (held-out split: "
             f"{(data.get('dataset') or {}).get('split')})", ""]
    lines.append(table(["format", "file", "KiB", "precision", "runnable here"],
                       [[f, e["path"], (e["size"] or 0) / 1024, e["precision"], "yes" if e["runnable_here"] else
                         "no"] for f, e in data["files"].items()]))
    if data["validation"]:
        columns = [c for c in ("accuracy", "map50", "map", "agreement", "max_abs_diff")
                   if any(c in r for r in data["validation"].values())]
        lines += ["", "measured at export:", metrics_table(data["validation"], columns)]
    lines += ["", f"runtimes installed: {data['runtimes'] or 'none'}"]
    return "\n".join(lines)
