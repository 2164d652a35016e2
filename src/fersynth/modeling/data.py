"""Training data without decoding a PNG twice: a variant's rows are decoded once (preprocessing applied)
into a uint8 array saved in the array cache (:func:`fersynth.paths.array_cache_dir`) and memory-mapped on
every later run; batches are sliced from it, moved to the device (pinned, non-blocking, one batch
prefetched by a thread) and augmented there, per sample, in one batched call.

torchvision's v2 transforms draw one set of random parameters per call, so on a batch tensor every
image would get the same rotation; :class:`BatchAugment` draws per-sample parameters and applies them
with one ``affine_grid`` / ``grid_sample`` (border padding = Keras' ``fill_mode="nearest"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.nn import functional as F

from fersynth.atomic import atomic_path
from fersynth.config import at_least
from fersynth.log import get_logger, progress
from fersynth.modeling.preprocess import Preprocess, PreprocessConfig
from fersynth.paths import array_cache_dir
from fersynth.variants.images import to_8bit
from fersynth.variants.variant import Variant

log = get_logger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample random augmentation, applied on the device. Presets: see :data:`PRESETS`."""

    rotation: float = 0.0  # degrees, either way
    shift: float = 0.0  # fraction of the side, either way
    shear: float = 0.0  # degrees, either way
    zoom: float = 0.0  # scale in [1 - zoom, 1 + zoom]
    horizontal_flip: bool = False
    vertical_flip: bool = False
    brightness: float = 0.0  # multiply by [1 - b, 1 + b]


PRESETS = {
    "none": AugmentConfig(),
    "paper001": AugmentConfig(horizontal_flip=True),  # its ImageDataGenerator: horizontal flip only
    "paper002": AugmentConfig(rotation=15, shift=0.1, horizontal_flip=True, brightness=0.2),
    "paper004": AugmentConfig(rotation=30, shift=0.2, shear=0.2, zoom=0.2, horizontal_flip=True, vertical_flip=True),
}


@dataclass(frozen=True)
class InputConfig:
    size: int = 48
    channels: int = 1  # 1: grey; 3: RGB (grey sources are repeated over the channels)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"input.channels must be 1 (grey) or 3 (RGB), not {self.channels!r}")
        at_least("input", 8, size=self.size)


def cache_path(variant: Variant, rows: pd.DataFrame, config: InputConfig, cache_dir: Path | None = None) -> Path:
    """Content-addressed: the rows' pixel hashes, in order, and the input settings. ``cache_dir``: default
    the project's array cache."""
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(config), sort_keys=True, default=str).encode())
    for sha in rows["sha256"]:
        digest.update(sha.encode())
    return Path(cache_dir or array_cache_dir()) / f"{digest.hexdigest()[:32]}.npy"


def decoded(variant: Variant, rows: pd.DataFrame, config: InputConfig, cache_dir: Path | None = None) -> np.ndarray:
    """``rows`` as uint8 N x C x size x size, from the cache when present (memory-mapped)."""
    path = cache_path(variant, rows, config, cache_dir)
    if path.exists():
        return np.load(path, mmap_mode="r")
    preprocess = Preprocess(config.preprocess)
    out = np.empty((len(rows), config.channels, config.size, config.size), dtype=np.uint8)
    position = {key: i for i, key in enumerate(rows["key"])}
    for row, image in progress(variant.iter_images(rows), desc=f"decode {variant.name}", total=len(rows)):
        out[position[row["key"]]] = model_input(image, config, preprocess)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, out)
    log.info("cached %d decoded images of %s in %s (%.1f MiB)", len(rows), variant.name, path, out.nbytes / 2**20)
    return out


def model_input(image: Image.Image, config: InputConfig, preprocess: Preprocess | None = None) -> np.ndarray:
    """One picture as a model sees it (uint8 C x size x size): 8-bit by its value range, grey with the
    configured preprocessing or RGB, bicubic resize. Training, evaluation and ``fersynth predict`` all
    decode through here, so a served model never sees pictures prepared differently from its training."""
    mode = "L" if config.channels == 1 else "RGB"
    image = to_8bit(image)  # a 16-bit picture by its value range, not clipped to white
    image = (preprocess or Preprocess(config.preprocess))(image.convert("L")) if mode == "L" else image.convert("RGB")
    image = image.resize((config.size, config.size), resample=3)  # bicubic
    array = np.asarray(image.convert(mode))
    return array[None] if mode == "L" else array.transpose(2, 0, 1)


class BatchAugment:
    def __init__(self, config: AugmentConfig):
        self.config = config

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x``: float N x C x H x W in [0, 1] on any device; ``generator`` on the CPU."""
        c, n = self.config, len(x)

        def uniform(limit: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * 2 - 1) * limit

        if c.rotation or c.shift or c.shear or c.zoom:
            angle = uniform(math.radians(c.rotation))
            shear = uniform(math.radians(c.shear))
            scale = 1 + uniform(c.zoom)
            tx, ty = uniform(2 * c.shift), uniform(2 * c.shift)  # grid units: the side is 2
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta = torch.stack(
                [
                    torch.stack([cos / scale, (-sin + torch.tan(shear) * cos) / scale, tx], 1),
                    torch.stack([sin / scale, (cos + torch.tan(shear) * sin) / scale, ty], 1),
                ],
                1,
            ).to(x.device, x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if c.horizontal_flip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if c.vertical_flip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        if c.brightness:
            x = (x * (1 + uniform(c.brightness)).to(x.device, x.dtype)[:, None, None, None]).clamp(0, 1)
        return x


class BatchLoader:
    """Shuffled (or ordered) batches of (float images in [0, 1] on ``device``, int64 labels). The next
    batch is prepared by a thread while the current one trains. Images come channels-last: with the
    model in that layout too (:func:`fersynth.modeling.architectures.channels_last`), oneDNN's
    convolutions train the demo's CNN ~1.3x faster on CPU."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        device: str = "cpu",
        shuffle: bool = True,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.batch_size, self.device, self.shuffle = batch_size, device, shuffle
        self.augment = BatchAugment(augment) if augment and augment != AugmentConfig() else None
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        batches = math.ceil(len(self.labels) / self.batch_size)
        lone = self.shuffle and batches > 1 and len(self.labels) % self.batch_size == 1
        return batches - lone

    def _batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(self.images[np.sort(index)] if self.shuffle else self.images[index]))
        y = torch.from_numpy(self.labels[np.sort(index)] if self.shuffle else self.labels[index])
        if self.device.startswith("cuda"):
            x, y = x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x, y

    def __iter__(self):
        order = self.rng.permutation(len(self.labels)) if self.shuffle else np.arange(len(self.labels))
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        if self.shuffle and len(batches) > 1 and len(batches[-1]) == 1:
            # a training batch of one breaks BatchNorm: the last image joins the batch before it
            batches[-2:] = [np.concatenate(batches[-2:])]
        ready: queue.Queue = queue.Queue(maxsize=2)

        def produce() -> None:
            for index in batches:
                ready.put(self._batch(index))
            ready.put(None)

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        while (item := ready.get()) is not None:
            x, y = item
            x = x.float().div_(255)
            if self.augment is not None:
                x = self.augment(x, self.generator)
            yield x.contiguous(memory_format=torch.channels_last), y
        worker.join()
