"""``edgecnn info`` without a model: the machine facts that explain install and speed problems on a Pi."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from edgecnn.runtime import platform_info as pi

from .conftest import ROOT, run_cli


def test_platform_info_reports_runtimes_cpus_and_thread_defaults():
    info = pi.platform_info()
    assert info["cpu_count"] >= 1 and 1 <= info["usable_cpus"] <= info["cpu_count"]
    assert set(info["default_threads"]) == {"onnxruntime", "litert"}
    assert info["python"].startswith(".".join(map(str, sys.version_info[:2])))
    for dist, module in pi.RUNTIME_MODULES.items():
        assert (dist in info["runtimes"]) == (importlib.util.find_spec(module) is not None)


def test_32_bit_python_on_a_64_bit_kernel_is_called_out(monkeypatch):
    monkeypatch.setattr(pi, "python_bits", lambda: 32)
    monkeypatch.setattr(pi.platform, "machine", lambda: "aarch64")
    info = pi.platform_info()
    assert "32-bit" in info["python"]
    assert any("64-bit kernel" in note and "tflite-runtime" in note for note in info["notes"])


def test_device_model_falls_back_to_cpuinfo(monkeypatch):
    files = {"/proc/device-tree/model": None,
             "/proc/cpuinfo": "processor\t: 0\nCPU part\t: 0xd08\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"}
    monkeypatch.setattr(pi, "_read", files.get)
    assert pi.device_model() == "Raspberry Pi 4 Model B Rev 1.4"


def test_platform_info_imports_only_the_standard_library():
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('p', "
            f"{str(ROOT / 'edgecnn' / 'runtime' / 'platform_info.py')!r}); m = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(m); m.platform_info(); "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('numpy', 'PIL', 'onnxruntime', "
            "'ai_edge_litert', 'tflite_runtime', 'edgecnn')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cli_info_without_a_model():
    text = run_cli("info")
    assert text.returncode == 0, text.stderr
    assert "runtimes" in text.stdout and "default threads" in text.stdout and "cpu count" in text.stdout
    data = json.loads(run_cli("info", "--json").stdout)
    assert {"platform", "python", "runtimes", "cpu_count", "default_threads"} <= set(data)
