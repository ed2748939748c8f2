"""What this machine is and what it can run: the facts behind ``edgecnn info`` without a model (stdlib only).

On a Raspberry Pi the question "why won't it install / why is it slow" usually comes down to four facts, so they
are gathered here without importing numpy or any runtime:

* **the userland's word size, not the kernel's.** 32-bit Raspberry Pi OS on a Pi 4 or 5 boots a 64-bit kernel, so
  ``uname -m`` (and ``platform.machine()``, and pip's ``platform_machine`` marker) say ``aarch64`` while Python is a
  32-bit armhf build that can only take armv7l wheels — onnxruntime has none;
* **which runtimes are installed *and* importable** (metadata alone can outlive a removed package);
* **the device** (``/proc/device-tree/model``), and the OS release;
* **CPU count and the thread defaults** the backends use when ``--threads`` is not given: onnxruntime starts one
  intra-op thread per physical core; the LiteRT interpreter, given no thread count, runs single-threaded.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import struct
import sys
from pathlib import Path

#: pip package -> the top-level module it must provide.
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}
LIBRARIES = ("numpy", "pillow", "click")


def _version(dist: str) -> str | None:
    import importlib.metadata  # here, not at the top: it costs ~40 ms of start-up that inference never needs

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocked or half-removed package
        return False


def importable_runtimes() -> set[str]:
    """The runtimes (pip package names) whose module can be imported here, without reading package metadata.

    What choosing a default format needs, and cheap enough for every ``edgecnn infer`` start-up (a path lookup).
    """
    return {dist for dist, module in RUNTIME_MODULES.items() if _importable(module)}


def available_runtimes() -> dict[str, str]:
    """Installed runtimes as {pip package: version}; importing nothing, so it is cheap.

    A package counts only when its metadata *and* its module are there: a leftover .dist-info without the module
    (or a module hidden on purpose) must not make the default format an .onnx file that then cannot be opened.
    """
    found = {}
    for dist, module in RUNTIME_MODULES.items():
        version = _version(dist)
        if version and _importable(module):
            found[dist] = version
    return found


def _read(path: str) -> str | None:
    try:
        return Path(path).read_bytes().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None


def device_model() -> str | None:
    """``Raspberry Pi 4 Model B Rev 1.4`` and the like, from the device tree (or cpuinfo); None elsewhere."""
    model = _read("/proc/device-tree/model")
    if model:
        return model
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model" and value.strip():
            return value.strip()
    return None


def os_release() -> str | None:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME")
    except (AttributeError, OSError):  # Python < 3.10, or not Linux
        return None


def physical_cores() -> int | None:
    """Distinct (package, core) pairs in sysfs: what onnxruntime sizes its default thread pool by (Linux only)."""
    cores: set[tuple[str | None, str]] = set()
    for topology in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        core, package = _read(str(topology / "core_id")), _read(str(topology / "physical_package_id"))
        if core is not None:
            cores.add((package, core))
    return len(cores) or None


def python_bits() -> int:
    """32 or 64: the running interpreter's pointer size (the userland's word size, whatever the kernel says)."""
    return struct.calcsize("P") * 8


def platform_info() -> dict:
    """Platform, Python, installed runtimes, CPU count and default threads, as a JSON-ready dict."""
    bits = python_bits()
    machine = platform.machine()
    cpus = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        usable = cpus
    runtimes = available_runtimes()
    info = {
        "platform": platform.platform(),
        "os": os_release(),
        "device": device_model(),
        "machine": machine,
        "python": f"{platform.python_version()} ({platform.python_implementation()}, {bits}-bit)",
        "executable": sys.executable,
        "runtimes": runtimes,
        "libraries": {dist: _version(dist) for dist in LIBRARIES},
        "cpu_count": cpus,
        "usable_cpus": usable,
        "physical_cores": physical_cores(),
        "default_threads": {
            "onnxruntime": f"{physical_cores() or usable} (one per physical core)",
            "litert": "1 (the interpreter's default when no thread count is given)",
        },
        "notes": [],
    }
    if bits == 32 and machine in ("aarch64", "arm64"):
        info["notes"].append("32-bit Python on a 64-bit kernel (32-bit Raspberry Pi OS on a Pi 4/5): pip takes "
                             "armv7l wheels here, so use the .tflite files with tflite-runtime; onnxruntime has none")
    if not runtimes:
        info["notes"].append("no runtime installed: pip install onnxruntime (64-bit) or tflite-runtime (32-bit ARM, "
                             "Python <= 3.11), or pip install 'edgecnn[tflite]'")
    return info


__all__ = ["RUNTIME_MODULES", "available_runtimes", "device_model", "platform_info"]
