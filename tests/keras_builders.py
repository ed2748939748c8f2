"""Helpers for the tests of models users bring: seeded random weights, a calibration folder, labels, Keras' answer.

Imported by tests/test_presets.py and tests/test_foreign_models.py only (both load TensorFlow lazily).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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
