"""``pip install edgecnn`` on each platform: the environment markers in pyproject.toml, evaluated per platform.

The expectations are the wheels PyPI had when checked with ``pip download --only-binary=:all: --platform ...``
(DEVELOPERS.md, "Wheels per platform"): onnxruntime for x86-64 and 64-bit ARM only; on 32-bit ARM only
tflite-runtime 2.14, for CPython <= 3.11 and NumPy 1.x; ai-edge-litert for Linux x86-64/aarch64, Windows AMD64,
macOS arm64 (macOS x86-64 up to 3.11). Training packages must never be among the runtime requirements.
"""

from __future__ import annotations

import pytest
import tomllib
from packaging.requirements import Requirement

from .conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TRAINING = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "tf-keras"}

PLATFORMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "raspios-64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    "raspios-32": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "armv7l"},
    "raspios-32-pi-zero": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "armv6l"},
    "windows": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
    "macos-x86_64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "x86_64"},
}


def requirements(platform: str, python: str, extras=()) -> dict[str, str]:
    """{name: specifier} of what pip would install directly on that platform and Python."""
    env = {**PLATFORMS[platform], "python_version": python, "python_full_version": f"{python}.0", "os_name":
           "nt" if platform == "windows" else "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython"}
    lines = PROJECT["dependencies"] + [r for extra in extras for r in PROJECT["optional-dependencies"][extra]]
    found: dict[str, str] = {}
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({**env, "extra": ""}):
            found[requirement.name.lower()] = ",".join(filter(None, [found.get(requirement.name.lower()),
                                                                     str(requirement.specifier)]))
    return found


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
@pytest.mark.parametrize("python", ["3.9", "3.11", "3.13"])
def test_runtime_install_never_pulls_the_training_stack(platform, python):
    assert not set(requirements(platform, python, extras=("tflite",))) & TRAINING


@pytest.mark.parametrize("platform", ["linux-x86_64", "raspios-64", "windows", "macos-arm64", "macos-x86_64"])
@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_onnxruntime_where_it_has_wheels(platform, python):
    found = requirements(platform, python)
    assert "onnxruntime" in found and "tflite-runtime" not in found
    assert "<2" not in found["numpy"]


@pytest.mark.parametrize("platform", ["raspios-32", "raspios-32-pi-zero"])
@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_no_onnxruntime_on_32_bit_arm(platform, python):
    assert "onnxruntime" not in requirements(platform, python, extras=("tflite",))


def test_32_bit_pi_os_bookworm_gets_tflite_runtime_with_numpy_1():
    found = requirements("raspios-32", "3.11")
    assert "tflite-runtime" in found
    assert "<2" in found["numpy"]


@pytest.mark.parametrize("platform, python", [("raspios-32", "3.13"), ("raspios-32-pi-zero", "3.11")])
def test_nothing_unavailable_is_required(platform, python):
    """No LiteRT wheel exists there: requiring one would make the whole install fail."""
    found = requirements(platform, python, extras=("tflite",))
    assert "tflite-runtime" not in found and "ai-edge-litert" not in found


@pytest.mark.parametrize("platform, python, expected", [
    ("linux-x86_64", "3.11", "ai-edge-litert"), ("raspios-64", "3.13", "ai-edge-litert"),
    ("windows", "3.13", "ai-edge-litert"), ("macos-arm64", "3.13", "ai-edge-litert"),
    ("macos-x86_64", "3.11", "ai-edge-litert"), ("macos-x86_64", "3.13", None),
    ("raspios-32", "3.11", "tflite-runtime"),
])
def test_tflite_extra_picks_the_interpreter_that_has_wheels(platform, python, expected):
    found = requirements(platform, python, extras=("tflite",))
    litert = {"ai-edge-litert", "tflite-runtime"} & set(found)
    assert litert == ({expected} if expected else set())
