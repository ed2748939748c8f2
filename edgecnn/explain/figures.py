"""Matplotlib helpers shared by the explanation's figures: one look (sizes, colour maps, image display) for all.

Matplotlib comes with the train extra; on a runtime-only install :func:`available` is False and the sections
give their numbers as tables instead, saying that the figures need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import require
from .subject import installed

#: Colour maps: sequential for activations and heat, diverging (0 = white) for signed weights.
ACTIVATION_CMAP = "viridis"
HEAT_CMAP = "jet"
SIGNED_CMAP = "RdBu_r"
DPI = 100


def available() -> bool:
    return installed("matplotlib")


def pyplot():
    """pyplot on the file-only Agg backend (no display needed)."""
    matplotlib = require("matplotlib", "train", "The explanation's figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path, name: str) -> str:
    """Write ``fig`` as ``out/name`` (PNG, tight bounding box) and close it; returns the file name."""
    plt = pyplot()
    fig.savefig(out / name, dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return name


def show_pixels(ax, pixels: np.ndarray, title: str | None = None) -> None:
    """A uint8 HxWx1 or HxWx3 image, grey images in grey, crisp (no smoothing of small images)."""
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(pixels, interpolation="nearest")
    bare(ax, title)


def show_map(ax, values: np.ndarray, title: str | None = None, cmap: str = ACTIVATION_CMAP, vmin=None, vmax=None):
    """A 2-D array as an image, each pixel a cell (nearest), its own range unless one is given."""
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    bare(ax, title)
    return image


def overlay(ax, pixels: np.ndarray, heat: np.ndarray, title: str | None = None, alpha: float = 0.5) -> None:
    """``heat`` (0..1, any size) stretched over the image, half transparent."""
    show_pixels(ax, pixels)
    height, width = pixels.shape[:2]
    ax.imshow(heat, cmap=HEAT_CMAP, vmin=0, vmax=1, alpha=alpha, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
              interpolation="bilinear")
    bare(ax, title)


def bare(ax, title: str | None = None, size: int = 8) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=size)


def frame(ax, colour: str, width: float = 3.0) -> None:
    """Draw a coloured frame around an axes (mistakes in red)."""
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)
