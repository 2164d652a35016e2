"""Conversion of generated pictures to a target dataset's format (paper 001, Fig. 7: the 512x512 RGB
Stable Diffusion output becomes 224x224 grey for NHFI, 48x48 grey for FER2013)."""

from __future__ import annotations

from PIL import Image

FORMATS = {  # dataset -> (side in pixels, PIL mode), as ingested
    "fer2013": (48, "L"),
    "nhfi": (224, "L"),
    "affectnet": (224, "RGB"),
    "ddpm_casme": (48, "L"),  # paper 002 trains its DDPM on 48x48 grey CASME II frames
}


def convert(image: Image.Image, size: int, mode: str) -> Image.Image:
    """Centre-crop to a square, resize with a Lanczos filter, convert the colour mode."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.LANCZOS).convert(mode)


def to_dataset_format(image: Image.Image, dataset: str) -> Image.Image:
    if dataset not in FORMATS:
        raise ValueError(f"no target format for {dataset!r}; known: {sorted(FORMATS)}")
    return convert(image, *FORMATS[dataset])
