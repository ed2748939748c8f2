"""Turn any image Pillow can read into the model's input tensor, exactly as the manifest says.

Training data goes through :func:`resize_array` too (the digits are upscaled by it), so the pixels a model was
trained on and the pixels the runtime feeds it come from one function.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def open_image(source: ImageSource) -> Image.Image:
    """Open a path, bytes, PIL image or HxW[xC] uint8 array as a fully decoded PIL image, EXIF rotation applied.

    Every way a file can be unusable (missing, empty, not an image, truncated, over Pillow's pixel limit) becomes an
    InputError naming the file, never a Pillow traceback.
    """
    if isinstance(source, Image.Image):
        return ImageOps.exif_transpose(source)
    if isinstance(source, np.ndarray):
        return Image.fromarray(_as_uint8(source))
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{name}: no such file")
        if path.is_dir():
            raise InputError(f"{name} is a folder; pass image files, or the folder alone to classify every image in it")
        if path.stat().st_size == 0:
            raise InputError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; a decompression bomb is refused either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{name} has more pixels than Pillow's safety limit ({Image.MAX_IMAGE_PIXELS:,}); resize it first"
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image Pillow can read (wrong extension or not an image at all)") from None
    except OSError as exc:
        raise InputError(f"{name} could not be decoded ({exc}); the file is probably truncated or corrupt") from None
    except SyntaxError as exc:  # Pillow raises this for some malformed headers
        raise InputError(f"{name} could not be decoded ({exc})") from None
    return ImageOps.exif_transpose(image)


def _as_uint8(array: np.ndarray) -> np.ndarray:
    """Map an array of any numeric dtype onto 0..255 uint8 (16-bit and float images included)."""
    if array.dtype == np.uint8:
        return array
    data = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.floating) and data.size and data.max() <= 1.0 and data.min() >= 0.0:
        data = data * 255.0
    elif data.size and data.max() > 255:
        data = data * (255.0 / (65535.0 if data.max() <= 65535 else data.max()))
    return np.clip(np.rint(data), 0, 255).astype(np.uint8)


def to_mode(image: Image.Image, mode: str, background: int = 0) -> Image.Image:
    """Convert any Pillow mode to ``L`` or ``RGB``; transparency is flattened onto ``background`` (0..255)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = Image.fromarray(_as_uint8(np.asarray(image)))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "RGBA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        image = Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode != mode:
        image = image.convert(mode)
    return image


def resize_array(pixels: np.ndarray, width: int, height: int, resample: str = "bilinear") -> np.ndarray:
    """Resize an HxW or HxWxC uint8 array with Pillow; the one resize both training data and the runtime use."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    image = Image.fromarray(pixels)
    return np.asarray(image.resize((width, height), RESAMPLE[resample]))


def load_pixels(source: ImageSource, prep: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """Open ``source`` and return (HxWxC uint8 pixels at the model's size, original (width, height))."""
    image = to_mode(open_image(source), prep["color_mode"], prep.get("background", 0))
    original = image.size
    pixels = np.asarray(image.resize((prep["width"], prep["height"]), RESAMPLE[prep.get("resize", "bilinear")])
                        if image.size != (prep["width"], prep["height"]) else image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, original


def pixels_to_input(pixels: np.ndarray, prep: dict) -> np.ndarray:
    """uint8 pixels (…xHxWxC) -> float32 model input, ``pixels * scale + offset``."""
    return pixels.astype(np.float32) * np.float32(prep.get("scale", 1.0 / 255.0)) + np.float32(prep.get("offset", 0.0))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; an InputError if there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder} contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files
