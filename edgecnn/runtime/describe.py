"""``edgecnn info``: what an export holds and what this machine can run (stdlib + manifest only, no model load).

These functions return data; the text ``edgecnn info`` prints is made by ``edgecnn.report.info_text``, above the
runtime, which imports nothing outside ``runtime/``, ``manifest`` and ``errors``.
"""

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
                   "runnable_here": fmt in runnable,
                   **({"float_fallback": entry["float_fallback"]} if entry.get("float_fallback") else {}),
                   **({"verified_in": entry["verified_in"]} if entry.get("verified_in") else {})}
             for fmt, entry in manifest["files"].items()}
    validation = (manifest.get("validation") or {}).get("results", {})
    return {"model": str(manifest.folder), "name": manifest.get("name"), "task": manifest.task,
            "labels": manifest.labels, "input": manifest["input"], "preprocessing": manifest["preprocessing"],
            "outputs": manifest["outputs"],
            "dataset": manifest.get("dataset"), "files": files, "validation": validation,
            "versions": manifest.get("versions"), "targets": manifest.get("targets") or {},
            "runtimes": available_runtimes()}
