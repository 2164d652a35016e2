"""``fersynth export VARIANT DIR``: a browsable folder-per-class copy (``<split>/<label>_<emotion>/``)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fersynth.atomic import atomic_path
from fersynth.errors import InputError
from fersynth.log import get_logger, progress
from fersynth.variants.variant import Variant

log = get_logger(__name__)
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def class_folder(row) -> str:
    if row["emotion"] is None or row["label"] is None or str(row["label"]) == "<NA>":
        return "unlabeled"
    return f"{int(row['label'])}_{row['emotion']}"


def export_variant(variant_dir: Path, out_dir: Path, by_split: bool = True) -> int:
    """Write every image of the variant as a file; names keep the manifest key so files trace back.
    Returns the number of files written. A manifest whose keys or folders would leave ``out_dir`` (an
    absolute key, ``..``) or land two images on one file is refused before anything is written."""
    variant = Variant(variant_dir)
    names = plan_files(variant, by_split)
    written = 0
    with atomic_path(Path(out_dir), kind="export", inputs=(Path(variant_dir),)) as tmp:
        for row, data in progress(variant.iter_bytes(), desc=f"export {variant.name}", total=len(variant.manifest)):
            path = tmp / names[row["key"]]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written += 1
    log.info("export %s: %d files under %s", variant.name, written, out_dir)
    return written


def plan_files(variant: Variant, by_split: bool) -> dict[str, PurePosixPath]:
    """key -> relative file path; :class:`InputError` for a key or folder that would escape, or a clash."""
    names: dict[str, PurePosixPath] = {}
    owner: dict[PurePosixPath, str] = {}
    for row in variant.manifest.itertuples(index=False):
        key = str(row.key)
        _check_part(key, "key", allow_slash=True)
        folders = [str(row.split)] if by_split else []
        folders.append(class_folder(row._asdict()))
        for folder in folders:
            _check_part(folder, "folder", allow_slash=False)
        stem = "__".join(PurePosixPath(key).with_suffix("").parts)
        name = PurePosixPath(*folders, f"{stem}{SUFFIX.get(row.format, '.png')}")
        if name in owner:
            raise InputError(f"{variant.layout.root}: keys {owner[name]!r} and {key!r} export to the same file {name}")
        names[key], owner[name] = name, key
    return names


def _check_part(text: str, what: str, allow_slash: bool) -> None:
    path = PurePosixPath(text)
    bad = (
        not text
        or path.is_absolute()
        or ".." in path.parts
        or "\\" in text
        or "\x00" in text
        or (not allow_slash and ("/" in text or text in (".", "..")))
    )
    if bad:
        raise InputError(f"refusing to export: manifest {what} {text!r} would leave the export folder")
