"""``make pi-check``: the comparison logic always, the emulated Raspberry Pi run on request.

The full check builds arm64 and armhf userlands and downloads wheels on its first run (about 6 minutes, then cached in
.pi-cache/), and needs root, debootstrap and qemu-user-static; it runs here when EDGECNN_PI_CHECK=1.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT

SCRIPT = ROOT / "scripts" / "pi_check.py"


@pytest.fixture(scope="module")
def pi_check():
    spec = importlib.util.spec_from_file_location("pi_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pi_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _classification(*scores_by_input):
    return {name: {"input": name, "predictions": [{"label": label, "score": score} for label, score in preds]}
            for name, preds in scores_by_input}


def test_compare_accepts_equal_results_and_tiny_fp32_noise(pi_check):
    host = _classification(("a.png", [("7", 0.91), ("1", 0.05)]), ("b.png", [("3", 0.6), ("8", 0.3)]))
    guest = _classification(("a.png", [("7", 0.91004), ("1", 0.05)]), ("b.png", [("3", 0.6), ("8", 0.3)]))
    outcome = pi_check.compare(host, guest, exact=True, tolerance=1e-4)
    assert outcome.problems == [] and outcome.same_top1 == 2 and outcome.n == 2
    assert outcome.max_score_diff == pytest.approx(4e-5)


def test_compare_flags_fp32_score_drift_but_lets_int8_differ_in_scores(pi_check):
    host = _classification(("a.png", [("7", 0.91), ("1", 0.05)]))
    guest = _classification(("a.png", [("7", 0.90), ("1", 0.05)]))
    assert pi_check.compare(host, guest, exact=True, tolerance=1e-4).problems
    assert pi_check.compare(host, guest, exact=False).problems == []


def test_compare_flags_a_different_top1_and_a_missing_input(pi_check):
    host = _classification(("a.png", [("7", 0.5), ("1", 0.4)]), ("b.png", [("3", 0.9)]))
    guest = _classification(("a.png", [("1", 0.5), ("7", 0.4)]))
    problems = pi_check.compare(host, guest, exact=False).problems
    assert any("top-1 7 vs 1" in p for p in problems)
    assert any(p.startswith("b.png") for p in problems)


def test_compare_detections_by_label_and_box(pi_check):
    def det(label, score, box):
        return {"label": label, "score": score, "box": box}

    def scene(*detections):
        return {"s.png": {"input": "s.png", "detections": list(detections)}}

    host = scene(det("3", 0.9, [10, 10, 40, 40]), det("5", 0.8, [50, 5, 70, 30]))
    close = scene(det("3", 0.9, [10.6, 10, 40, 40]), det("5", 0.8, [50, 5, 70, 30.9]))
    moved = scene(det("3", 0.9, [12, 10, 40, 40]), det("5", 0.8, [50, 5, 70, 30]))
    fewer = scene(det("3", 0.9, [10, 10, 40, 40]))
    assert pi_check.compare(host, close, exact=False, box_tolerance=1.0).problems == []
    assert pi_check.compare(host, moved, exact=False, box_tolerance=1.0).problems
    assert pi_check.compare(host, fewer, exact=False).problems
    swapped = scene(det("5", 0.8, [50, 5, 70, 30]), det("3", 0.9, [10, 10, 40, 40]))  # near-ties may reorder
    assert pi_check.compare(host, swapped, exact=True).problems == []
    relabelled = scene(det("3", 0.9, [10, 10, 40, 40]), det("6", 0.8, [50, 5, 70, 30]))
    assert pi_check.compare(host, relabelled, exact=False).problems


def test_near_threshold_int8_differences_pass_only_when_confident_detections_agree(pi_check):
    def scene(*detections):
        return {"s.png": {"input": "s.png", "detections": [{"label": l, "score": s, "box": b}
                                                          for l, s, b in detections]}}

    host = scene(("3", 0.95, [10, 10, 40, 40]), ("5", 0.45, [50, 5, 70, 30]))
    extra_weak = scene(("3", 0.93, [12, 11, 40, 43]), ("5", 0.44, [50, 5, 70, 30]), ("1", 0.41, [0, 0, 9, 9]))
    assert pi_check.compare(host, extra_weak, exact=False).problems  # not exact ...
    assert pi_check.confident_problems(host, extra_weak) == []  # ... but every confident detection agrees
    lost = scene(("5", 0.45, [50, 5, 70, 30]))
    assert any("only on x86-64" in p for p in pi_check.confident_problems(host, lost))
    relabelled = scene(("8", 0.95, [10, 10, 40, 40]), ("5", 0.45, [50, 5, 70, 30]))
    assert len(pi_check.confident_problems(host, relabelled)) == 2  # a confident 3 lost, a confident 8 gained
    far = scene(("3", 0.95, [17, 10, 40, 40]), ("5", 0.45, [50, 5, 70, 30]))
    assert pi_check.confident_problems(host, far)


def test_only_int8_files_on_other_int8_kernels_may_differ(pi_check, tmp_path):
    facts = {"machine": "aarch64", "python": "3.11", "full": "3.11.2", "glibc": "2.36"}
    from_pip, from_apt = pi_check.pip_requirements(tmp_path, pi_check.TARGETS["64-bit"], facts)
    stack = pi_check.Stack(pi_check.TARGETS["64-bit"], tmp_path, facts, from_pip, from_apt, tmp_path, False)
    assert stack.other_int8_kernels("onnx-int8")  # onnxruntime's ARM kernels
    assert not stack.other_int8_kernels("tflite-int8")  # the same ai-edge-litert as on x86-64
    assert not stack.other_int8_kernels("onnx") and not stack.other_int8_kernels("tflite")


def test_scores_rounded_across_a_digit_boundary_are_within_tolerance(pi_check):
    host = _classification(("a.png", [("7", 0.1235)]))
    guest = _classification(("a.png", [("7", 0.1234)]))  # |0.1235 - 0.1234| is 1.0000000000000286e-04 in floats
    assert pi_check.compare(host, guest, exact=True, tolerance=1e-4).problems == []


def test_aarch64_requirements_come_from_pyproject_and_hold_no_training_stack(pi_check):
    facts = {"machine": "aarch64", "python": "3.11", "full": "3.11.2", "glibc": "2.36"}
    names = [r.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
             for r in pi_check.target_requirements(facts)]
    assert {"numpy", "pillow", "click", "onnxruntime", "ai-edge-litert"} <= set(names)
    assert not set(names) & set(pi_check.FORBIDDEN)
    assert "tflite-runtime" not in names
    tags = pi_check.platform_tags(facts)
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux2014_aarch64" in tags and "manylinux_2_17_aarch64" in tags


def _tools_ready() -> str | None:
    if os.environ.get("EDGECNN_PI_CHECK") != "1":
        return "set EDGECNN_PI_CHECK=1 to run the emulated Raspberry Pi check (~6 min cold, ~1.5 min cached)"
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [t for t in ("debootstrap", "qemu-aarch64-static") if not shutil.which(t, path=path)]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install debootstrap qemu-user-static)"
    if os.geteuid() != 0 and not shutil.which("fakeroot"):
        return "debootstrap needs root or fakeroot (apt-get install fakeroot)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_tools_ready() is not None, reason=str(_tools_ready()))
def test_pi_check_agrees_with_x86_64_on_every_reference_export():
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                            check=False)
    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    assert "runs agree" in result.stdout and "MISMATCH" not in result.stdout
    rows_64 = [line.split() for line in result.stdout.splitlines() if " 64-bit " in line]
    # The bar, exact on arm64, for fp32 ONNX and int8 TFLite; int8 ONNX runs onnxruntime's ARM kernels.
    assert rows_64 and all(row[-1] == "ok" for row in rows_64 if row[1] != "onnx-int8"), result.stdout
    assert all(row[-1] in ("ok", "differs*") for row in rows_64), result.stdout


def _packages_index(root, numpy: str, pil: str):
    lists = root / "var" / "lib" / "apt" / "lists"
    lists.mkdir(parents=True)
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-armhf_Packages").write_text(
        f"Package: python3-numpy\nVersion: {numpy}\nDescription: x\n continued\n\n"
        f"Package: python3-pil\nVersion: {pil}\n\n")


ARMV7L = {"machine": "armv7l", "python": "3.11", "full": "3.11.2", "glibc": "2.36"}


def test_32bit_install_takes_numpy_and_pillow_from_debian_and_has_no_onnxruntime(pi_check, tmp_path):
    _packages_index(tmp_path, "1:1.24.2-1+deb12u1", "9.4.0-1.1+deb12u1")
    target = pi_check.TARGETS["32-bit"]
    from_pip, from_apt = pi_check.pip_requirements(tmp_path, target, ARMV7L)
    assert from_apt == ["numpy==1.24.2 (Debian python3-numpy)", "pillow==9.4.0 (Debian python3-pil)"]
    assert any(r.startswith("tflite-runtime") for r in from_pip)
    assert not any(r.split(">")[0].split("=")[0] in ("numpy", "pillow", "onnxruntime") for r in from_pip)
    stack = pi_check.Stack(target, tmp_path, ARMV7L, from_pip, from_apt, tmp_path, False)
    assert not stack.runs("onnx") and stack.runs("tflite-int8")


def test_32bit_install_refuses_a_debian_numpy_our_markers_exclude(pi_check, tmp_path):
    _packages_index(tmp_path, "1:2.2.4-1", "11.1.0-5")
    with pytest.raises(pi_check.CheckError, match="numpy"):
        pi_check.pip_requirements(tmp_path, pi_check.TARGETS["32-bit"], ARMV7L)


def test_64bit_install_runs_every_format(pi_check, tmp_path):
    facts = {"machine": "aarch64", "python": "3.11", "full": "3.11.2", "glibc": "2.36"}
    from_pip, from_apt = pi_check.pip_requirements(tmp_path, pi_check.TARGETS["64-bit"], facts)
    stack = pi_check.Stack(pi_check.TARGETS["64-bit"], tmp_path, facts, from_pip, from_apt, tmp_path, False)
    assert from_apt == [] and stack.runs("onnx") and stack.runs("onnx-int8") and stack.runs("tflite")


def test_alternatives_links_make_debians_blas_loadable(pi_check, tmp_path):
    blas = tmp_path / "usr" / "lib" / "arm-linux-gnueabihf" / "blas"
    blas.mkdir(parents=True)
    (blas / "libblas.so.3").write_bytes(b"elf")
    pi_check.link_alternatives(tmp_path)
    assert (blas.parent / "libblas.so.3").read_bytes() == b"elf"
