"""Section 6 (the seed's slide 10): the training augmentation of this model's task, applied to one input.

It is the very pipeline ``edgecnn train`` uses (``image_augmenter`` for classifiers, the detector's photometric
``_augment``), not a look-alike, so it needs TensorFlow: the one part of the report besides Grad-CAM that does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import figures
from .page import Section
from .subject import TRAIN_EXTRA, Subject, installed

VARIANTS = 8


def explain_augmentation(subject: Subject, out: Path) -> Section:
    section = Section("augmentation", "Augmentation",
                      "Slide 10: training shows the model altered copies of each example, so it learns the object "
                      "and not the exact pixels; the exported model never sees these alterations.")
    if subject.kind == "text-classification":
        section.absent("Text models train on the token ids as they are (word dropout only with -o token_dropout): "
                       "there is no picture of an augmentation to show.")
        return section
    if not installed("tensorflow"):
        section.absent(f"The augmentation is the training pipeline itself, which runs on TensorFlow: {TRAIN_EXTRA}.")
        return section
    if not figures.available():
        section.absent(f"The augmentation grid needs matplotlib: {TRAIN_EXTRA}.")
        return section
    seed = int((subject.manifest.get("dataset") or {}).get("seed", 0))
    item = subject.items[0]
    variants, description = _augmented(subject.kind, item.x, seed)
    prep = subject.preprocessing
    pixels = np.clip(np.rint((variants - prep.get("offset", 0.0)) / prep.get("scale", 1 / 255)), 0, 255)
    section.data = {"input": item.name, "pipeline": description, "variants": len(variants), "seed": seed}
    section.figure(_grid(item.raw, pixels.astype(np.uint8), out),
                   f"{item.title} and {len(variants)} draws of the training augmentation ({description}).")
    return section


def _augmented(kind: str, x: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    from ..keras_io import import_tensorflow

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    if kind == "object-detection":
        from ..train.detection_models import _augment

        # One draw per call: training shuffles the channels once per batch, so a batch of 8 would show one order.
        draws = [np.asarray(_augment(tf, tf.convert_to_tensor(x)))[0] for _ in range(VARIANTS)]
        return np.stack(draws), "brightness ±0.1, contrast ×0.75-1.25, RGB channel order shuffled; boxes unchanged"
    from ..train.fit import image_augmenter

    augmenter = image_augmenter(keras, seed)
    steps = ", ".join(type(layer).__name__.removeprefix("Random").lower() for layer in augmenter.layers)
    return np.asarray(augmenter(np.repeat(x, VARIANTS, axis=0), training=True)), f"random {steps}; no flips"


def _grid(original: np.ndarray, variants: np.ndarray, out: Path) -> str:
    plt = figures.pyplot()
    columns = 3
    rows = int(np.ceil((len(variants) + 1) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.5 * rows), squeeze=False)
    flat = list(axes.flat)
    figures.show_pixels(flat[0], original, "original")
    figures.frame(flat[0], "#4c72b0")
    for ax, pixels in zip(flat[1:], variants):
        figures.show_pixels(ax, pixels)
    for ax in flat[len(variants) + 1:]:
        ax.axis("off")
    fig.tight_layout(pad=0.4)
    return figures.save(fig, out, "augmentation.png")
