"""Step 1 of ``fersynth smote`` (:mod:`fersynth.generate.smote`): paper 004's image-generator augmentation of
minority train images, built from torchvision transforms (v2); nothing else uses it.

``image_generator`` reproduces the Keras ``ImageDataGenerator`` settings of paper 004 (rotation 30,
width/height shift 0.2, shear 0.2, zoom 0.2, horizontal and vertical flip, ``fill_mode="nearest"``).
torchvision's affine only fills with a constant, so the image is first edge-padded (which is what
nearest fill produces), transformed, then cropped back to its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torchvision.transforms.v2 as T
from PIL import Image

from fersynth.config import at_least


@dataclass(frozen=True)
class ImageGeneratorConfig:
    """``configs/smote.yaml`` ``augment``; the defaults are paper 004's."""

    rotation: float = 30.0  # degrees, either way
    shift: float = 0.2  # fraction of width / height
    shear: float = 0.2  # degrees, as Keras' shear_range
    zoom: float = 0.2  # scale in [1 - zoom, 1 + zoom]
    horizontal_flip: bool = True
    vertical_flip: bool = True

    def __post_init__(self) -> None:
        at_least("smote.augment", 0, rotation=self.rotation, shift=self.shift, shear=self.shear, zoom=self.zoom)
        if not self.zoom < 1:
            raise ValueError(f"smote.augment.zoom must be below 1 (the smallest scale is 1 - zoom), not {self.zoom}")


def image_generator(size: tuple[int, int], config: ImageGeneratorConfig = ImageGeneratorConfig()) -> T.Compose:
    """A transform PIL -> PIL of the same ``size`` (width, height). Draws from torch's global RNG:
    seed it (``torch.manual_seed``) for reproducible output.

    >>> image_generator((48, 48))(Image.new("L", (48, 48))).size
    (48, 48)
    """
    width, height = size
    pad = max(width, height) // 2
    padded_width, padded_height = width + 2 * pad, height + 2 * pad
    steps: list = [
        T.Pad(pad, padding_mode="edge"),
        T.RandomAffine(
            degrees=config.rotation,
            translate=(config.shift * width / padded_width, config.shift * height / padded_height),
            scale=(1 - config.zoom, 1 + config.zoom),
            shear=config.shear,
            interpolation=T.InterpolationMode.BILINEAR,
        ),
        T.CenterCrop((height, width)),
    ]
    if config.horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    if config.vertical_flip:
        steps.append(T.RandomVerticalFlip())
    return T.Compose(steps)


def augment(image: Image.Image, transform: T.Compose) -> Image.Image:
    out = transform(image)
    return out if isinstance(out, Image.Image) else T.functional.to_pil_image(out)
