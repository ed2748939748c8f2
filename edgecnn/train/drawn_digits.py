"""Digits as people draw and print them, generated with Pillow: the test set of "does it read real handwriting?".

The digits dataset's images are scikit-learn's 8x8 scans, white ink on black filling the frame; a user draws a 7
black on white in the middle of a 300-pixel canvas, or photographs a printed one. This module draws such images,
seeded and offline, so the project can measure that case itself instead of trusting a screenshot:

- strokes: polylines and arcs through a hand-made template per digit (several per digit: a 7 with and without a
  bar, an open and a closed 4, ...), each point jittered, the whole slanted, sheared and stretched, drawn with a
  round pen from hairline to bold;
- fonts: Pillow's bundled font (``ImageFont.load_default(size=...)``) and the TrueType fonts Debian ships under
  /usr/share/fonts (DejaVu, Liberation) when present - a missing one is replaced by the bundled font, so the set
  has the same size and labels everywhere - some with an outline stroke for bold;
- images 28 to 400 pixels a side (not always square), the digit 35-90 % of the height anywhere in it, dark ink on
  light paper or light ink on a dark ground, some in colour, mild Gaussian noise and blur.

Every split is a list of uint8 arrays of their own sizes (H x W, or H x W x 3): what a user would pass to
``classify``; ``edgecnn eval`` runs each through the runtime's own preprocessing. The reference digits model
never trains on it: it is scored here on images it never saw the like of. The transfer benchmark does train on it
(``-d train_per_class``), each image framed by the same preprocessing (``datasets.model_pixels``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: TrueType fonts tried in this order (Debian's fonts-dejavu-core and fonts-liberation); each missing one is
#: replaced by Pillow's bundled font, so the generated set is the same size on every machine.
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
)
MIN_SIDE, MAX_SIDE = 28, 400
#: Share of the images drawn with a pen (the rest are typeset), and of those with a light ground.
STROKE_SHARE, LIGHT_GROUND_SHARE, COLOUR_SHARE = 0.7, 0.6, 0.2


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, steps: int = 24) -> list:
    """Points of an elliptic arc in the unit square (y down; degrees, 0 = right, 90 = down)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(start, end, steps)]


#: digit -> variants -> strokes -> points in the unit square (x right, y down).
TEMPLATES: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[_arc(.5, .5, .3, .45, -90, 270, 36)], [_arc(.5, .5, .36, .45, -100, 265, 36)]],
    1: [[[(.3, .25), (.55, .05), (.55, .95)]], [[(.5, .05), (.5, .95)]],
        [[(.3, .22), (.52, .05), (.52, .95)], [(.3, .95), (.75, .95)]]],
    2: [[_arc(.5, .3, .3, .25, 190, 400) + [(.15, .95), (.85, .95)]],
        [_arc(.5, .28, .32, .23, 180, 380) + [(.2, .9), (.2, .95), (.85, .92)]]],
    3: [[_arc(.5, .27, .28, .22, 200, 450), _arc(.5, .72, .32, .23, 270, 520)],
        [[(.2, .05), (.8, .05), (.45, .42)] + _arc(.5, .7, .32, .25, 270, 520)]],
    4: [[[(.65, .95), (.65, .05), (.12, .65), (.88, .65)]],
        [[(.22, .05), (.17, .6), (.85, .6)], [(.65, .3), (.65, .95)]]],
    5: [[[(.8, .05), (.27, .05), (.24, .45)] + _arc(.5, .68, .32, .27, 235, 520)],
        [[(.24, .05), (.2, .45)] + _arc(.5, .68, .32, .27, 235, 520), [(.24, .05), (.8, .05)]]],
    6: [[[(.72, .05), (.45, .2), (.3, .45), (.25, .72)] + _arc(.5, .72, .25, .23, 180, 540)],
        [_arc(.62, .5, .4, .45, 280, 180, 16) + _arc(.52, .72, .27, .23, 180, 520)]],
    7: [[[(.15, .05), (.85, .05), (.4, .95)]], [[(.15, .05), (.85, .05), (.45, .95)], [(.3, .5), (.75, .5)]],
        [[(.15, .15), (.2, .05), (.85, .05), (.55, .5), (.5, .95)]]],
    8: [[_arc(.5, .27, .22, .22, 90, 450), _arc(.5, .72, .28, .25, -90, 270)],
        [_arc(.5, .27, .24, .22, 45, 405), _arc(.5, .72, .28, .24, -100, 260)]],
    9: [[_arc(.5, .3, .27, .25, 0, 360), [(.77, .3), (.72, .95)]],
        [_arc(.48, .3, .27, .25, 10, 370) + _arc(.4, .35, .36, .6, 0, 100, 12)]],
}


def fonts() -> list[ImageFont.FreeTypeFont | None]:
    """The TrueType files of :data:`FONT_FILES` that exist here, ``None`` (Pillow's bundled font) for the others."""
    return [path if Path(path).is_file() else None for path in FONT_FILES]


def _font(path: str | None, size: int):
    if path is not None:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def draw_digit(digit: int, rng: np.random.Generator, font_files: list | None = None) -> np.ndarray:
    """One digit image as a uint8 array (H x W, or H x W x 3 for coloured ink), drawn as :mod:`drawn_digits` says."""
    width = round(math.exp(rng.uniform(math.log(MIN_SIDE), math.log(MAX_SIDE))))
    height = int(np.clip(round(width * math.exp(rng.uniform(-0.3, 0.3))), MIN_SIDE, MAX_SIDE))
    light = rng.random() < LIGHT_GROUND_SHARE
    ground = int(rng.uniform(175, 255)) if light else int(rng.uniform(0, 70))
    ink = int(rng.uniform(0, 80)) if light else int(rng.uniform(180, 255))
    image = Image.new("L", (width, height), ground)
    digit_height = rng.uniform(0.35, 0.9) * min(height, width * 1.3)
    centre = (width / 2 + rng.uniform(-0.5, 0.5) * (width - 0.6 * digit_height),
              height / 2 + rng.uniform(-0.5, 0.5) * (height - digit_height))
    if rng.random() < STROKE_SHARE:
        _pen(image, digit, rng, digit_height, centre, ink)
    else:
        _type(image, digit, rng, digit_height, centre, ink, font_files if font_files is not None else fonts())
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * max(1.0, min(width, height) / 100)))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8), (height, width))
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if rng.random() < COLOUR_SHARE:  # a blue or red pen, or a tinted ground
        tint = rng.uniform(0.5, 1.0, 3)
        tint[rng.integers(3)] = 1.0
        pixels = np.clip(np.rint(pixels[..., None] * tint), 0, 255).astype(np.uint8)
    return pixels


def _pen(image: Image.Image, digit: int, rng, digit_height: float, centre, ink: int) -> None:
    """Strokes through a jittered, slanted, sheared template, with round ends and joints."""
    variants = TEMPLATES[digit]
    strokes = variants[rng.integers(len(variants))]
    slant, shear = math.radians(rng.uniform(-12, 12)), rng.uniform(-0.25, 0.1)
    aspect = rng.uniform(0.6, 1.05)
    pen = max(1, round(digit_height * math.exp(rng.uniform(math.log(0.02), math.log(0.16)))))
    cos, sin = math.cos(slant), math.sin(slant)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        points = np.asarray(stroke) + rng.normal(0, 0.015, (len(stroke), 2))
        x, y = (points[:, 0] - 0.5) * aspect, points[:, 1] - 0.5
        x = x + shear * y
        x, y = x * cos - y * sin, x * sin + y * cos
        xy = [(centre[0] + digit_height * a, centre[1] + digit_height * b) for a, b in zip(x, y)]
        draw.line(xy, fill=ink, width=pen, joint="curve")
        for px, py in (xy[0], xy[-1]):
            draw.ellipse((px - pen / 2, py - pen / 2, px + pen / 2, py + pen / 2), fill=ink)


def _type(image: Image.Image, digit: int, rng, digit_height: float, centre, ink: int, font_files: list) -> None:
    """The digit typeset in one of the fonts, sometimes outlined (bolder)."""
    size = max(6, round(digit_height / 0.72))
    font = _font(font_files[rng.integers(len(font_files))], size)
    bold = round(size * rng.uniform(0.0, 0.06)) if rng.random() < 0.4 else 0
    ImageDraw.Draw(image).text(centre, str(digit), fill=ink, font=font, anchor="mm", stroke_width=bold,
                               stroke_fill=ink)


def drawn_digits(seed: int, per_class: int, stream: int = 0,
                 font_files: list | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """``per_class`` images of each digit 0-9, in a seeded shuffled order: (images, labels). ``stream`` numbers
    independent sets of one seed (the splits)."""
    rng = np.random.default_rng([seed, stream])
    labels = rng.permutation(np.repeat(np.arange(10), per_class))
    font_files = fonts() if font_files is None else font_files
    return [draw_digit(int(d), rng, font_files) for d in labels], labels.astype(np.int64)
