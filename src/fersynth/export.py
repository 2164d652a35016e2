"""``fersynth export VARIANT DIR``: a browsable folder-per-class copy (``<split>/<label>_<emotion>/``)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fersynth.atomic import atomic_path
from fersynth.log import get_logger, progress
from fersynth.variant import Variant

log = get_logger(__name__)
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def class_folder(row) -> str:
    if row["emotion"] is None or row["label"] is None or str(row["label"]) == "<NA>":
        return "unlabeled"
    return f"{int(row['label'])}_{row['emotion']}"


def export_variant(variant_dir: Path, out_dir: Path, by_split: bool = True) -> int:
    """Write every image of the variant as a file; names keep the manifest key so files trace back.
    Returns the number of files written."""
    variant = Variant(variant_dir)
    written = 0
    with atomic_path(Path(out_dir)) as tmp:
        for row, data in progress(variant.iter_bytes(), desc=f"export {variant.name}", total=len(variant.manifest)):
            stem = "__".join(PurePosixPath(row["key"]).with_suffix("").parts)
            folder = tmp / (row["split"] if by_split else "") / class_folder(row)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{stem}{SUFFIX.get(row['format'], '.png')}").write_bytes(data)
            written += 1
    log.info("export %s: %d files under %s", variant.name, written, out_dir)
    return written
