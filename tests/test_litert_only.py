"""The 32-bit Raspberry Pi install: numpy, Pillow, click and a LiteRT interpreter, no onnxruntime.

onnxruntime has no 32-bit ARM wheels, so there the .tflite files must work on their own. Rather than pretend with
an import hook (which leaves onnxruntime's metadata visible), the test builds what ``pip install numpy pillow click
ai-edge-litert`` would give: a folder holding only those distributions and their dependencies (symlinked from this
environment, metadata included), and runs Python with ``-S`` (no site-packages) on it plus the source tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .conftest import ROOT, error_lines

LITERT_ONLY = ("numpy", "pillow", "click", "ai-edge-litert")
FORBIDDEN = ("onnxruntime", "tensorflow", "keras", "tf2onnx", "onnx")


def _closure(names) -> list[metadata.Distribution]:
    """The installed distributions ``names`` need, transitively (markers evaluated here, extras ignored)."""
    todo, seen, found = list(names), set(), []
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific dependency that is not installed here
        found.append(dist)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


@pytest.fixture(scope="module")
def litert_site(tmp_path_factory) -> Path:
    """A folder that looks like site-packages after installing only LITERT_ONLY."""
    try:
        dists = _closure(LITERT_ONLY)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"cannot read installed metadata: {exc}")
    if "ai-edge-litert" not in {d.metadata["Name"].lower() for d in dists}:
        pytest.skip("ai-edge-litert is not installed here (pip install 'edgecnn[tflite]')")
    site = tmp_path_factory.mktemp("litert-only-site")
    for dist in dists:
        names = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for name in names:
            source = Path(dist.locate_file(name))
            if source.exists() and not (site / name).exists() and not name.endswith(".pth"):
                (site / name).symlink_to(source)
    leaked = sorted(n for n in FORBIDDEN if (site / n).exists())
    assert not leaked, f"the LiteRT-only closure pulled {leaked}"
    return site


def _python(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_the_litert_only_environment_really_lacks_onnxruntime(litert_site):
    result = _python(litert_site, "import importlib.util, json; print(json.dumps("
                                  "[importlib.util.find_spec(n) is not None for n in ('onnxruntime', 'numpy', "
                                  "'PIL', 'click', 'ai_edge_litert')]))")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, True, True, True, True]


def test_tflite_int8_classifies_the_samples_without_onnxruntime(litert_site, digits_export):
    code = f"""
import json, sys
from pathlib import Path
import edgecnn
model = edgecnn.load({str(digits_export)!r}, format="tflite-int8")
samples = sorted(Path({str(digits_export)!r}, "samples").glob("*.png"))
print(json.dumps({{
    "results": {{p.name: model.classify(p).label for p in samples}},
    "default_format": edgecnn.load({str(digits_export)!r}).format,
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {list(FORBIDDEN)!r}),
}}))
"""
    result = _python(litert_site, code)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["results"], "no samples were classified"
    assert data["results"] == {name: name.split("-")[0] for name in data["results"]}
    manifest = json.loads((digits_export / "edgecnn.json").read_text())
    assert manifest["files"][data["default_format"]]["path"].endswith(".tflite")
    assert data["loaded"] == []


def test_asking_for_onnx_without_onnxruntime_names_the_pip_package(litert_site, digits_export):
    code = f"""
import edgecnn
try:
    edgecnn.load({str(digits_export)!r}, format="onnx")
except edgecnn.MissingDependencyError as exc:
    print("MissingDependencyError:", exc)
"""
    result = _python(litert_site, code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("MissingDependencyError:"), result.stdout
    assert "pip install onnxruntime" in lines[0]


def test_cli_on_a_litert_only_install(litert_site, digits_export):
    base = [sys.executable, "-S", "-m", "edgecnn.cli"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
           "PYTHONPATH": os.pathsep.join([str(litert_site), str(ROOT)]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    ok = subprocess.run([*base, "infer", str(digits_export / "samples"), "--model", str(digits_export), "--json"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert ok.returncode == 0, ok.stderr
    results = [json.loads(line) for line in ok.stdout.splitlines() if line.startswith("{")]
    assert results and all(Path(r["input"]).name.split("-")[0] == r["predictions"][0]["label"] for r in results)
    refused = subprocess.run([*base, "infer", str(digits_export / "samples"), "--model", str(digits_export),
                              "--format", "onnx"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                             check=False)
    assert refused.returncode == 2
    errors = error_lines(refused)
    assert len(errors) == 1 and "pip install onnxruntime" in errors[0], refused.stderr


def test_a_blocked_onnxruntime_with_metadata_left_behind_falls_back_to_tflite(digits_export):
    """A broken install (metadata present, module not importable) must not make .onnx the default."""
    code = f"""
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "onnxruntime":
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, Blocker())
import importlib.metadata, edgecnn
assert importlib.metadata.version("onnxruntime")  # the metadata is still there
model = edgecnn.load({str(digits_export)!r})
print(model.format)
try:
    edgecnn.load({str(digits_export)!r}, format="onnx")
except edgecnn.MissingDependencyError as exc:
    print("MissingDependencyError:", exc)
"""
    if not _has("onnxruntime"):
        pytest.skip("onnxruntime is not installed here, so there is nothing to block")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    default, error = result.stdout.strip().splitlines()[-2:]
    manifest = json.loads((digits_export / "edgecnn.json").read_text())
    assert manifest["files"][default]["path"].endswith(".tflite")
    assert error.startswith("MissingDependencyError:") and "pip install onnxruntime" in error


def _has(dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_tflite_runtime_with_numpy_2_is_refused_with_advice(monkeypatch):
    """tflite-runtime 2.14 (the only 32-bit ARM interpreter) dies inside its first call under NumPy 2."""
    import types

    from edgecnn.errors import MissingDependencyError
    from edgecnn.runtime import backends

    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = type("Interpreter", (), {})
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    monkeypatch.setattr(backends, "_version", lambda dist: "2.14.0")
    monkeypatch.setattr(backends.np, "__version__", "2.4.6")
    with pytest.raises(MissingDependencyError, match=r"pip install 'numpy<2'"):
        backends.import_litert_interpreter()
    monkeypatch.setattr(backends.np, "__version__", "1.26.4")
    assert backends.import_litert_interpreter() is fake.Interpreter
