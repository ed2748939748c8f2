"""The README's code works as written: every ```python block and every cheap ```bash command runs here.

They run in a scratch folder holding a copy of ``exported/`` (so nothing can write into the committed exports) and
the few input files the examples name (``seven.png``, ``photo.jpg``, ``article.txt``, ...), with ``HOME`` there
too, so the Raspberry Pi section's ``~/models/digits-cnn`` exists. Commands that train, export, install, copy to a
Pi or run until stopped are skipped, each for a reason stated in ``SKIPPED``; a README command that is neither run
nor named there fails ``test_every_readme_command_is_run_or_skipped_for_a_stated_reason``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from .conftest import EXPORTED, ROOT

README = ROOT / "README.md"
#: Commands run here: edgecnn's cheap, read-only ones.
RUNNABLE = re.compile(r"^edgecnn (infer|eval|info|models|datasets|quantize-report)\b")
#: Commands not run, and why.
SKIPPED = {
    r"^make (demo|test)\b": "runs the whole pipeline or the test suite itself (minutes)",
    r"^make export-detector\b": "trains the reference detector (~2 h)",
    r"^edgecnn train\b": "trains for minutes (test_training.py and the *_e2e tests train short runs)",
    r"^edgecnn export\b": "exports for minutes (test_export_e2e.py and the *_e2e tests export short runs)",
    r"^python3 -m pip wheel\b": "builds the wheel to copy to a Raspberry Pi",
    r"(^|/)pip(3)? |^python3 -m pip\b": "installs packages from the network",
    r"^python3 -m venv\b|^sudo\b|^source\b": "sets up a Raspberry Pi",
    r"^(scp|ssh|rsync)\b": "copies to a Raspberry Pi",
    r"--watch\b|^rpicam-still\b|^mkdir -p ~/frames$": "watches a camera's folder until stopped (test_watch.py)",
    r"^edgecnn serve\b|^curl\b": "runs an HTTP server until stopped, and calls it (the serve tests start one)",
    r"--model runs/": "runs an export that the (skipped) train and export commands above it write",
    r"^edgecnn explain\b": "writes a report in 5-20 s each (test_explain.py runs the three exports in Chromium)",
    r"^TF_CONFIG=": "trains on two local workers for minutes (test_distribute.py runs these commands)",
}
#: Output of the C++ libraries that must never reach the user's stderr.
CHATTER = ("oneDNN", "absl", "fully_quantize", "XNNPACK", "TensorFlow", "Traceback")


def readme_blocks(language: str) -> list[str]:
    return [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), re.DOTALL | re.MULTILINE)
            if lang == language]


def bash_commands() -> list[str]:
    """Each command of the ```bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"(^|\s+)#.*$", "", line).strip()
            if command:
                commands.append(re.sub(r"\s+", " ", command) if not RUNNABLE.match(command) else command)
    return commands


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED.items() if re.search(pattern, command)), None)


RUN = [c for c in bash_commands() if RUNNABLE.match(c) and not skip_reason(c)]
SLOW = re.compile(r"^edgecnn (eval|quantize-report)\b")  # the held-out split, every format: 15-45 s each


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder like the repository root to a new user: the exports (a copy) and the inputs the README names."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(EXPORTED, root / "exported")
    digits = root / "exported" / "digits-cnn" / "samples"
    for name, label in (("a.png", "1"), ("b.png", "2")):
        shutil.copy(min(digits.glob(f"{label}-*.png")), root / name)
    shutil.copy(ROOT / "docs" / "seven.png", root / "seven.png")  # the README's 7, drawn black on white
    scene = min((root / "exported" / "digit-detector" / "samples").glob("*.png"))
    Image.open(scene).convert("RGB").save(root / "photo.jpg", quality=95)
    articles = sorted((root / "exported" / "bbc-news" / "samples").glob("*.txt"))
    shutil.copy(articles[0], root / "article.txt")
    (root / "headlines.txt").write_text("Shares fell after the bank cut its forecast\nThe striker scored twice\n")
    (root / "home" / "models").mkdir(parents=True)
    shutil.copytree(EXPORTED / "digits-cnn", root / "home" / "models" / "digits-cnn")
    return root


def _env(scratch: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GLOG_", "ABSL_"))}
    env["HOME"] = str(scratch / "home")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def assert_clean(result: subprocess.CompletedProcess, what: str) -> None:
    assert result.returncode == 0, (what, result.stdout[-2000:], result.stderr[-2000:])
    foreign = [line for line in result.stderr.splitlines() if not line.startswith("  ")
               or any(word in line for word in CHATTER)]
    assert not foreign, (what, result.stderr[-2000:])  # stderr: edgecnn's progress lines at most


def test_every_readme_command_is_run_or_skipped_for_a_stated_reason():
    commands = bash_commands()
    assert len(commands) > 20 and len(RUN) >= 10
    unaccounted = [c for c in commands if not RUNNABLE.match(c) and not skip_reason(c)]
    assert not unaccounted, f"README commands neither run nor skipped with a reason in SKIPPED: {unaccounted}"


def test_no_readme_command_writes_over_a_committed_export():
    """Following the README must never replace exported/<reference> (make export-* does that on purpose)."""
    text = README.read_text()
    committed = {p.name for p in EXPORTED.iterdir() if p.is_dir()}
    outs = re.findall(r"edgecnn export \S+(?: \S+)*? --out (\S+?)`?(?:\s|$)", text)
    assert outs, "the README shows no export command"
    for out in outs:
        parts = Path(out.strip("`")).parts
        assert not (len(parts) == 2 and parts[0] == "exported" and parts[1] in committed), out


def test_readme_python_blocks_run_as_written(scratch):
    # the MediaPipe block runs in .venv-mediapipe (tests/test_mediapipe.py), mediapipe is not in this venv; the Ray
    # block starts a local Ray, which talks on stderr (tests/test_ray.py runs it)
    blocks = [block for block in readme_blocks("python") if "import mediapipe" not in block
              and "import ray" not in block]
    assert len(blocks) >= 3
    for number, block in enumerate(blocks, 1):
        result = subprocess.run([sys.executable, "-c", block], cwd=scratch, env=_env(scratch), capture_output=True,
                                text=True, timeout=300, check=False)
        assert result.returncode == 0 and result.stderr == "", (number, block, result.stderr[-2000:])
        if 'classify("seven.png")' in block or 'preprocess("seven.png")' in block:  # edgecnn's, OpenCV's, .ort's
            assert result.stdout.split()[0] == "7", result.stdout


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if SLOW.match(c) else c for c in RUN])
def test_readme_command_runs(scratch, command):
    result = subprocess.run(["bash", "-c", command], cwd=scratch, env=_env(scratch), capture_output=True, text=True,
                            timeout=600, check=False)
    assert_clean(result, command)
    assert result.stdout.strip() or "--save" in command, command
