"""Untrusted bytes -> validated media, with limits and one-line reasons.

Images: the size in bytes and the pixel count are checked *before* decoding (a small PNG can declare
a 100-megapixel canvas); EXIF orientation is applied; every colour mode becomes 8-bit RGB.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import MediaError, MediaTooLargeError

MiB = 1024 * 1024
T = TypeVar("T")
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF")  # what browsers and phones send
WHITE = (255, 255, 255)  # transparent areas are shown on white, as in a browser


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * MiB
    max_pixels: int = 40_000_000  # width x height

    @classmethod
    def from_settings(cls, settings) -> "ImageLimits":
        return cls(settings.max_image_bytes, settings.max_image_pixels)


def read_image_file(path: str | os.PathLike, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Open an image file from disk (see `decode_image`); the file name prefixes every error."""
    return read_untrusted_file(path, limits.max_bytes, lambda data: decode_image(data, limits))


def read_untrusted_file(path: str | os.PathLike, max_bytes: int, decode: Callable[[bytes], T]) -> T:
    """Read a user's file, refusing it before reading when it is over `max_bytes`, and decode it;
    every error is one line that starts with the file's name."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise MediaTooLargeError(f"{path.name}: {too_big_message(size, max_bytes)}")
        data = path.read_bytes()
    except OSError as error:
        raise MediaError(f"{path.name}: cannot read the file ({error.strerror or error})") from None
    try:
        return decode(data)
    except MediaError as error:
        raise type(error)(f"{path.name}: {error}") from None


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Validate and decode untrusted image bytes into an 8-bit RGB image, upright per EXIF."""
    if not data:
        raise MediaError("the image file is empty")
    if len(data) > limits.max_bytes:
        raise MediaTooLargeError(too_big_message(len(data), limits.max_bytes))
    image = _open_checked(data, limits)
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as error:
        raise MediaError(f"the image data is corrupt or truncated ({error})") from None
    return to_rgb(image)


def _open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise MediaError(f"not a supported image (expected one of {', '.join(IMAGE_FORMATS)})") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        # Pillow's own guard fired while reading the header: far beyond any limit of ours.
        raise MediaError(f"the image has too many pixels, over the limit of {_megapixels(limits.max_pixels)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise MediaError(f"the image data is corrupt or truncated ({error})") from None
    if image.format not in IMAGE_FORMATS:
        raise MediaError(f"{image.format} images are not supported (use one of {', '.join(IMAGE_FORMATS)})")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise MediaError(
            f"the image is {width}x{height} = {_megapixels(width * height)}, "
            f"over the limit of {_megapixels(limits.max_pixels)}"
        )
    if width == 0 or height == 0:
        raise MediaError(f"the image has no pixels ({width}x{height})")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: alpha composited on white, CMYK and palettes converted,
    16/32-bit greyscale scaled (not clipped) to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _scale_to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    # 16-bit data spans 0..65535; float images are usually 0..1. Scale by the type's range, not by
    # the image's own maximum, so a dark photo stays dark.
    full_scale = 1.0 if image.mode == "F" and pixels.max(initial=0) <= 1.0 else 65535.0
    return Image.fromarray(np.clip(pixels / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def too_big_message(size: int, limit: int) -> str:
    """The one-line reason a file over a byte limit is refused (images and audio alike)."""
    return f"the file is {size / MiB:.1f} MiB, over the limit of {limit / MiB:.1f} MiB"
