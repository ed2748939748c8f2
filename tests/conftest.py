"""Shared fixtures: the committed reference exports and a way to run the CLI as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.runtime.detection import iou_matrix

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, stdin: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m edgecnn.cli ARGS`` in a fresh process and capture its output."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgecnn.cli", *args], cwd=cwd or ROOT, env=full_env,
                          input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr lines that are ours (LiteRT and TensorFlow print their own chatter from C++)."""
    return [line for line in result.stderr.splitlines() if line.startswith(("error:", "internal error:"))]


def objects_found(boxes, labels, truth_boxes, truth_labels) -> int:
    """How many ground-truth objects (in order) a detection of the same label overlaps by IoU >= 0.5, each
    detection used once. Boxes are (x0, y0, x1, y1) arrays; labels compare with ``==``."""
    boxes, labels = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels)
    unused = np.ones(len(boxes), bool)
    for box, label in zip(np.asarray(truth_boxes, np.float32).reshape(-1, 4), truth_labels):
        ious = iou_matrix(box[None], boxes)[0] * (labels == label) * unused
        if ious.size and ious.max() >= 0.5:
            unused[int(ious.argmax())] = False
    return int((~unused).sum())


def sample_truth(export: Path) -> list[tuple[str, list[tuple], list[str]]]:
    """A detector export's ``samples/ground_truth.json`` (COCO) as (file name, x0/y0/x1/y1 boxes, labels) per scene."""
    truth = json.loads((export / "samples" / "ground_truth.json").read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    scenes = []
    for image in truth["images"]:
        objects = [a for a in truth["annotations"] if a["image_id"] == image["id"]]
        scenes.append((image["file_name"], [(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in objects)],
                       [names[a["category_id"]] for a in objects]))
    return scenes


def reference_export(name: str, make_target: str) -> Path:
    """A committed reference export; a clear failure (not a skip) when it is missing."""
    path = EXPORTED / name
    if not (path / "edgecnn.json").is_file():
        pytest.fail(f"exported/{name} is missing: run 'make {make_target}' and commit it")
    return path


@pytest.fixture(scope="session")
def digits_export() -> Path:
    return reference_export("digits-cnn", "export-digits")


@pytest.fixture(scope="session")
def digits_keras(tmp_path_factory) -> Path:
    """A digits seed-cnn ``.keras`` trained here (8 epochs, seed 0, ~15 s): ``runs/`` is not in the repository, so
    a test that needs a real trained Keras model makes its own, in a fresh clone as on a developer's machine."""
    from edgecnn.train.fit import train

    folder = tmp_path_factory.mktemp("digits-keras")
    train("digits", "seed-cnn", folder / "run", epochs=8, seed=0, verbose=0)
    return folder / "run" / "model.keras"


@pytest.fixture()
def export_copy(digits_export, tmp_path) -> Path:
    """A writable copy of the digits export, for tests that damage it."""
    target = tmp_path / "digits-cnn"
    shutil.copytree(digits_export, target)
    return target
