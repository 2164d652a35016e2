"""Preprocessing options applied at training time, never baked into stored images (paper 000, 2.1):
histogram equalisation, CLAHE (OpenCV) and Gaussian blur, as PIL -> PIL callables that compose with
torchvision transforms."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps


@dataclass(frozen=True)
class PreprocessConfig:
    """``params.yaml: train.preprocess`` (later issue). ``clahe_clip`` 0 disables CLAHE; ``blur_sigma`` 0
    disables the blur. Applied in the order equalise, CLAHE, blur."""

    equalize: bool = False
    clahe_clip: float = 0.0
    clahe_tile: int = 8
    blur_sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.clahe_clip < 0 or self.blur_sigma < 0 or self.clahe_tile < 1:
            raise ValueError("clahe_clip and blur_sigma must be >= 0 and clahe_tile >= 1")


def equalize(image: Image.Image) -> Image.Image:
    """Global histogram equalisation (per channel for RGB)."""
    return ImageOps.equalize(image)


def clahe(image: Image.Image, clip_limit: float = 2.0, tile: int = 8) -> Image.Image:
    """Contrast-limited adaptive histogram equalisation; RGB images are equalised on lightness (LAB)."""
    operator = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile))
    if image.mode == "L":
        return Image.fromarray(operator.apply(np.asarray(image)))
    lab = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB)
    lab[..., 0] = operator.apply(np.ascontiguousarray(lab[..., 0]))
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


def gaussian_blur(image: Image.Image, sigma: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(sigma))


class Preprocess:
    """The configured chain as one callable. ``Preprocess(PreprocessConfig(clahe_clip=2))(image)``."""

    def __init__(self, config: PreprocessConfig):
        self.config = config

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.config.equalize:
            image = equalize(image)
        if self.config.clahe_clip > 0:
            image = clahe(image, self.config.clahe_clip, self.config.clahe_tile)
        if self.config.blur_sigma > 0:
            image = gaussian_blur(image, self.config.blur_sigma)
        return image

    def __repr__(self) -> str:
        return f"Preprocess({self.config})"
