"""Helpers for the tests of models users bring: seeded random weights, a calibration folder, labels, Keras' answer,
and ``edgecnn`` run as in an environment with the runtime only.

Imported by tests/test_presets.py, tests/test_foreign_models.py and tests/test_user_text_models.py (all load
TensorFlow lazily).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import ROOT

#: What ``pip install edgecnn`` without extras lacks (tests/test_runtime_only_install.py proves it on a real venv).
TRAINING_MODULES = ("tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "matplotlib")


def runtime_only_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``edgecnn ARGS`` in a fresh process where none of ``TRAINING_MODULES`` can be imported: what a user of an
    export runs, without the cost of building a venv (``sys.modules[name] = None`` makes ``import name`` fail)."""
    code = (f"import sys\nfor name in {TRAINING_MODULES!r}:\n    sys.modules[name] = None\n"
            "from edgecnn.cli import main\nmain(sys.argv[1:])\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def randomise(model, seed: int = 0, bias_scale: float = 1.0):
    """Give every weight a seeded random value (BatchNorm variances and scales kept positive) and the last layer
    a random bias, so that classes differ (freshly built keras.applications models tie on every class)."""
    rng = np.random.default_rng(seed)
    for variable in _weights(model):
        value = np.asarray(variable.numpy())
        name = variable.path
        if "variance" in name or "gamma" in name:
            new = rng.uniform(0.5, 1.5, value.shape)
        elif "moving_mean" in name or "beta" in name:
            new = rng.normal(0.0, 0.1, value.shape)
        elif value.ndim >= 2:
            fan_in = int(np.prod(value.shape[:-1])) or 1
            new = rng.normal(0.0, 1.0 / np.sqrt(fan_in), value.shape)
        else:
            new = value + rng.normal(0.0, 0.05, value.shape)
        variable.assign(new.astype(value.dtype))
    last = model.layers[-1]
    if getattr(last, "bias", None) is not None:
        last.bias.assign(rng.normal(0.0, bias_scale, last.bias.shape).astype("float32"))
    return model


def _weights(model) -> list:
    """Every weight but those of Normalization layers (their statistics are data, kept as adapted or given)."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found += _weights(layer)
        elif type(layer).__name__ != "Normalization":
            found += layer.weights
    return found


def image_folder(root: Path, classes: list[str], size: tuple[int, int], channels: int = 3, per_class: int = 10,
                 seed: int = 0) -> Path:
    """``root/<class>/<n>.png`` random images (one sub-folder per class), a calibration folder."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            shape = (size[1], size[0]) + ((channels,) if channels == 3 else ())
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{n}.png")
    return root


def labels_file(path: Path, labels: list[str]) -> Path:
    path.write_text("\n".join(labels) + "\n")
    return path


def image_pixels(path: Path, channels: int) -> np.ndarray:
    """The PNG's pixels as 1xHxWxC float32 0..255 (test images are saved at the model's size: no resize)."""
    pixels = np.asarray(Image.open(path).convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    return (pixels[..., None] if channels == 1 else pixels)[None]


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("### Your own Keras model", 1)[1].split("\n### ", 1)[0]


def readme_export(model_file: str) -> list[str]:
    """The arguments of the README's ``edgecnn export MODEL_FILE ...`` command in "Your own Keras model" (without
    the leading ``edgecnn``), so that the matrix row which builds that model runs the worked example as written."""
    import re
    import shlex

    commands = [line for body in re.findall(r"^```bash\n(.*?)^```", _readme_section(), re.DOTALL | re.MULTILINE)
                for line in body.replace("\\\n", " ").splitlines()]
    (command,) = [c for c in commands if c.strip().startswith(f"edgecnn export {model_file} ")]
    return shlex.split(command)[1:]


def readme_output(command: str) -> list[str]:
    """The lines of the ```text block the README's "Your own Keras model" shows right after `command` (in prose)."""
    import re

    section = _readme_section()
    after = section[section.index(f"`{command}`"):]
    (block,) = re.findall(r"^```text\n(.*?)^```", after, re.DOTALL | re.MULTILINE)[:1]
    return [line for line in block.splitlines() if line.strip()]
