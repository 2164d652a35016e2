"""``fersynth demo``: small copies of every source dataset in its exact native layout, drawn from a seed.

Writes ``<out>/<dataset>/`` (what a user would download) and ``<out>/ground_truth/<dataset>.csv``
(true emotion, flipped label, demographics, nuisances, planted corruption) for scoring later stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fersynth.atomic import atomic_path
from fersynth.config import at_least, check_seeds
from fersynth.demo.formats import (
    write_affectnet_lists,
    write_casme2,
    write_class_folders,
    write_fer2013,
    write_sfhq,
    write_utkface,
)
from fersynth.demo.sampling import Nuisances
from fersynth.log import get_logger
from fersynth.paths import ground_truth_path

DEMO_DATASETS = ("fer2013", "nhfi", "affectnet", "casme2", "utkface", "sfhq")
NHFI_FOLDERS = {name: name for name in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")}
AFFECTNET_FOLDERS = NHFI_FOLDERS | {"angry": "anger"}
log = get_logger(__name__)


COUNTS = (  # the sizes of DemoConfig (rows, images, subjects, clips): whole numbers >= 0
    "fer2013_rows",
    "nhfi_images",
    "affectnet_images",
    "casme2_subjects",
    "casme2_clips_per_subject",
    "utkface_images",
    "sfhq_images",
)


@dataclass(frozen=True)
class DemoConfig:
    """``configs/demo.yaml``. Sizes are per dataset; formats pick the native release to imitate."""

    seed: int = 2024
    datasets: tuple[str, ...] = DEMO_DATASETS
    fer2013_rows: int = 700
    fer2013_format: str = "csv"  # csv | folders
    # shares of Kaggle's Usage (Training, PublicTest, PrivateTest): val and test come from the last two
    fer2013_usage: tuple[float, float, float] = (0.8, 0.1, 0.1)
    nhfi_images: int = 280
    affectnet_images: int = 350
    affectnet_format: str = "lists"  # lists | folders
    casme2_subjects: int = 6
    casme2_clips_per_subject: int = 4
    casme2_frames_per_clip: tuple[int, int] = (4, 8)
    utkface_images: int = 300
    sfhq_images: int = 600  # unlabeled synthetic faces (paper 003's SFHQ: 89,785 at 1024 px)
    sfhq_size: int = 128
    nuisances: Nuisances = field(default_factory=Nuisances)

    def __post_init__(self) -> None:
        unknown = set(self.datasets) - set(DEMO_DATASETS)
        if unknown:
            raise ValueError(f"unknown demo datasets {sorted(unknown)}")
        if self.fer2013_format not in ("csv", "folders") or self.affectnet_format not in ("lists", "folders"):
            raise ValueError("fer2013_format is csv|folders and affectnet_format is lists|folders")
        shares = self.fer2013_usage
        if len(shares) != 3 or min(shares) < 0 or abs(sum(shares) - 1) > 1e-9 or shares[0] == 0:
            raise ValueError(
                f"fer2013_usage is three shares (Training, PublicTest, PrivateTest) that sum to 1, Training above 0;"
                f" got {list(shares)}"
            )
        check_seeds("demo", seed=self.seed)
        at_least("demo", 0, **{name: getattr(self, name) for name in COUNTS})
        at_least("demo", 1, casme2_frames_per_clip=self.casme2_frames_per_clip)
        if self.casme2_frames_per_clip[0] > self.casme2_frames_per_clip[1]:
            raise ValueError(f"demo.casme2_frames_per_clip is [fewest, most], got {list(self.casme2_frames_per_clip)}")
        at_least("demo", 16, sfhq_size=self.sfhq_size)  # smaller faces are quarantined at ingest: 'too small'


def make_demo(config: DemoConfig, out: Path) -> dict[str, int]:
    """Write every configured demo dataset under ``out``; returns ground-truth rows per dataset.
    Each dataset has its own seeded generator, so changing one size leaves the others unchanged."""
    out = Path(out)
    counts = {}
    for index, dataset in enumerate(config.datasets):
        rng = np.random.default_rng([config.seed, index])
        with atomic_path(out / dataset, kind="demo") as tmp:
            truth = _write_dataset(dataset, tmp, config, rng)
        frame = pd.DataFrame(truth)
        with atomic_path(ground_truth_path(out, dataset)) as tmp:
            frame.to_csv(tmp, index=False)
        counts[dataset] = len(frame)
        log.info(
            "demo %s: %d ground-truth rows (%d planted problems, %d flipped labels)",
            dataset,
            len(frame),
            int(frame.get("corrupt", pd.Series(dtype=bool)).fillna(False).astype(bool).sum()),
            int(frame.get("flipped", pd.Series(dtype=bool)).fillna(False).astype(bool).sum()),
        )
    return counts


def _write_dataset(dataset: str, out: Path, config: DemoConfig, rng: np.random.Generator) -> list[dict]:
    n = config.nuisances
    if dataset == "fer2013":
        return write_fer2013(out, config.fer2013_rows, config.fer2013_format, n, rng, config.fer2013_usage)
    if dataset == "nhfi":
        return write_class_folders(out, "nhfi", config.nhfi_images, 224, "L", "PNG", n, rng, NHFI_FOLDERS)
    if dataset == "affectnet":
        if config.affectnet_format == "lists":
            return write_affectnet_lists(out, config.affectnet_images, n, rng)
        return write_class_folders(
            out, "affectnet", config.affectnet_images, 224, "RGB", "PNG", n, rng, AFFECTNET_FOLDERS
        )
    if dataset == "casme2":
        return write_casme2(
            out, config.casme2_subjects, config.casme2_clips_per_subject, config.casme2_frames_per_clip, n, rng
        )
    if dataset == "sfhq":
        return write_sfhq(out, config.sfhq_images, config.sfhq_size, n, rng)
    return write_utkface(out, config.utkface_images, n, rng)
