"""Shared pieces of the ingesters: config, image-file reading, record building, folder-per-class."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from fersynth.labels import BASIC7, FOLDER_DROPPED, FOLDER_NAMES
from fersynth.variant import VariantWriter, decode_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class IngestConfig:
    """``params.yaml: ingest``. ``casme2_frames`` is ``all`` (onset..offset) or ``apex``;
    ``casme2_missing_apex`` says what apex mode does where ApexFrame is ``/``: ``middle`` frame or
    ``drop`` the clip. ``workers`` processes parse and encode where a reader can use them (FER2013's
    CSV); 0 means one per available CPU. Outputs do not depend on it."""

    seed: int = 42
    workers: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    shard_max_mb: int = 128
    casme2_frames: str = "all"
    casme2_missing_apex: str = "middle"

    def __post_init__(self) -> None:
        if abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) < 0:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {self.fractions}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.casme2_frames not in ("all", "apex"):
            raise ValueError(f"casme2_frames must be 'all' or 'apex', got {self.casme2_frames!r}")
        if self.casme2_missing_apex not in ("middle", "drop"):
            raise ValueError(f"casme2_missing_apex must be 'middle' or 'drop', got {self.casme2_missing_apex!r}")


def worker_count(config: IngestConfig) -> int:
    return config.workers or len(os.sched_getaffinity(0))


class BadInput(Exception):
    """An input that goes to quarantine; the message is the reason."""

    category = "bad_input"


class DroppedByRule(BadInput):
    """A well-formed input that a documented rule leaves out (e.g. AffectNet's contempt)."""

    category = "rule"


def check_image_suffix(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise BadInput(f"not an image: suffix {path.suffix or '(none)'}")


def read_image_file(path: Path) -> tuple[bytes, Image.Image]:
    """Read and fully decode an image file, raising :class:`BadInput` with a reason on failure."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadInput(f"unreadable file: {error.strerror}") from error
    if not data:
        raise BadInput("corrupt image: empty file")
    try:
        return data, decode_image(data)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadInput(f"corrupt image: {error}") from error


def basic7_record(dataset: str, key: str, source: str, emotion: str, split: str | None = None) -> dict:
    return {
        "key": key,
        "source": source,
        "dataset": dataset,
        "label_space": "basic7",
        "emotion": emotion,
        "label": BASIC7.index(emotion),
        "split": split,
        "synthetic": False,
    }


def ingest_class_folders(
    writer: VariantWriter, root: Path, dataset: str, files: list[Path], split_of: dict[Path, str] | None = None
) -> None:
    """Folder-per-class releases (NHFI, AffectNet folders, FER2013 folders): the parent folder names
    the emotion. ``split_of`` maps files to a split the release fixes; others are split later."""
    from fersynth.log import progress

    for path in progress(files, desc=f"ingest {dataset}"):
        source = path.relative_to(root).as_posix()
        folder = path.parent.name.lower()
        try:
            check_image_suffix(path)
        except BadInput as error:
            writer.reject(source, str(error))
            continue
        if folder in FOLDER_DROPPED:
            writer.reject(source, f"rule: class {folder!r} is outside the 7 basic emotions", "rule")
            continue
        if folder not in FOLDER_NAMES:
            writer.reject(source, f"unknown label: folder {path.parent.name!r}")
            continue
        try:
            data, image = read_image_file(path)
        except BadInput as error:
            writer.reject(source, str(error))
            continue
        split = (split_of or {}).get(path)
        writer.add(basic7_record(dataset, source, source, FOLDER_NAMES[folder], split), image, data)


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, sorted, hidden files skipped."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
