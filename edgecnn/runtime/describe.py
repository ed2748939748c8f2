"""``edgecnn info``: what an export holds and what this machine can run (stdlib + manifest only, no model load)."""

from __future__ import annotations

from .. import manifest as manifest_io
from .backends import available_runtimes


def describe_platform() -> dict:
    """Platform, Python, installed runtimes, CPU count and the default thread setting (see platform_info)."""
    from .platform_info import platform_info

    return platform_info()


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
        return _format_platform(data)
    lines = [(f"{data['model']}: {data['task']}, {len(data['labels'])} labels "
              f"({', '.join(data['labels'][:12])}{', ...' if len(data['labels']) > 12 else ''})"),
             f"input: {data['input']}",
             (f"dataset: {(data.get('dataset') or {}).get('name')} (held-out split: "
              f"{(data.get('dataset') or {}).get('split')})"), ""]
    lines.append(table(["format", "file", "KiB", "precision", "runnable here"],
                       [[f, e["path"], (e["size"] or 0) / 1024, e["precision"], "yes" if e["runnable_here"] else
                         "no"] for f, e in data["files"].items()]))
    if data["validation"]:
        columns = [c for c in ("accuracy", "map50", "map", "agreement", "max_abs_diff")
                   if any(c in r for r in data["validation"].values())]
        lines += ["", "measured at export:", metrics_table(data["validation"], columns)]
    lines += ["", f"runtimes installed: {data['runtimes'] or 'none'}"]
    return "\n".join(lines)


def _format_platform(data: dict) -> str:
    lines = []
    for key, value in data.items():
        if key == "notes":
            lines += [f"note: {note}" for note in value]
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        lines.append(f"{key.replace('_', ' '):16} {value if value is not None else '-'}")
    return "\n".join(lines)
