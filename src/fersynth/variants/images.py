"""Decoding image bytes fersynth did not make: size limits before any pixel is decoded (decompression
bombs, 1x1 images) and pixels wider than 8 bits brought to 8 bits by their value range.

PIL's ``convert("L")`` clips a 16-bit picture to 255 (a white image); :func:`to_8bit` maps the type's
range instead (0-65535 -> 0-255), so a 16-bit PNG trains as the picture it is.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS"})


class ImageRejected(ValueError):
    """An image that cannot be used; the message is the quarantine reason (``too large: ...``)."""


@dataclass(frozen=True)
class ImageLimits:
    """What an ingested image may be. ``max_pixels`` (width x height) is checked from the header, before
    decoding, so a 20000x20000 PNG of a few KB never allocates its 400 MB; ``min_side`` px per side.
    ``max_file_bytes`` bounds the file itself, checked before it is read (ingest's ``read_image_file``):
    a face picture is a few MB at most, so 64 MB refuses a sparse 1.5 GB ``x.png`` from its size."""

    max_pixels: int = 40_000_000
    min_side: int = 16
    max_file_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if min(self.max_pixels, self.min_side, self.max_file_bytes) < 1:
            raise ValueError(
                f"max_pixels, min_side and max_file_bytes must be >= 1, got {self.max_pixels}, {self.min_side}, "
                f"{self.max_file_bytes}"
            )


def decode_image(data: bytes, limits: ImageLimits | None = None) -> Image.Image:
    """Fully decode ``data`` (``load()`` catches truncated files that ``open()`` accepts); with ``limits``,
    refuse oversized or undersized images from their header. Raises :class:`ImageRejected` with a reason,
    or PIL's own errors for undecodable bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageRejected(f"too large: {error}") from None
        if limits is not None:
            check_size(image.size, limits)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageRejected(f"too large: {error}") from None
    return image


def check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise ImageRejected(f"too large: {width}x{height} pixels > max_pixels {limits.max_pixels}")
    if min(width, height) < limits.min_side:
        raise ImageRejected(f"too small: {width}x{height} < min_side {limits.min_side}")


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8-bit pixels. 16-bit modes map 0-65535 to 0-255; 32-bit integer ("I") and float
    ("F") pixels map by the range their values fall in: 0-255 as they are, 0-65535 like 16 bits, floats
    within 0-1 times 255; anything else raises :class:`ImageRejected`. Other modes are returned as
    they are (PIL's conversions of 8-bit modes are exact)."""
    if image.mode not in SIXTEEN_BIT_MODES and image.mode not in ("I", "F"):
        return image
    values = np.asarray(image).astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageRejected(f"unsupported pixels: mode {image.mode} with NaN or infinite values")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode in SIXTEEN_BIT_MODES or 255 < high <= 65535:
        scale = 255 / 65535
    elif image.mode == "F" and high <= 1.0:
        scale = 255.0
    elif high <= 255:
        scale = 1.0
    else:
        raise ImageRejected(f"unsupported pixels: mode {image.mode} values {low:g}..{high:g} outside 0-65535")
    if low < 0:
        raise ImageRejected(f"unsupported pixels: mode {image.mode} has negative values ({low:g})")
    return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), mode="L")
