"""``fersynth contact-sheet``: one PNG grid per class of a variant, so people look at generated faces
rather than read about them. Thumbnails are the first images by key (deterministic), synthetic rows
only by default."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from fersynth.atomic import atomic_path
from fersynth.log import get_logger
from fersynth.variants.variant import Variant

log = get_logger(__name__)


def contact_sheets(
    variant_dir: Path,
    out_dir: Path,
    per_class: int = 24,
    columns: int = 8,
    thumb: int = 96,
    synthetic_only: bool = True,
) -> dict[str, int]:
    """Write ``<out_dir>/<emotion>.png`` for every class; returns thumbnails per class."""
    variant = Variant(variant_dir)
    manifest = variant.manifest
    if synthetic_only:
        manifest = manifest[manifest["synthetic"].fillna(False).astype(bool)]
    manifest = manifest[manifest["emotion"].notna()].sort_values("key")
    counts = {}
    with atomic_path(Path(out_dir), kind="sheets", inputs=(Path(variant_dir),)) as tmp:
        tmp.mkdir(parents=True)
        for emotion, rows in manifest.groupby("emotion", sort=True):
            rows = rows.head(per_class)
            n_rows = -(-len(rows) // columns)
            caption = 14
            sheet = Image.new("RGB", (columns * thumb, n_rows * (thumb + caption)), "white")
            draw = ImageDraw.Draw(sheet)
            for index, (row, image) in enumerate(variant.iter_images(rows)):
                x, y = (index % columns) * thumb, (index // columns) * (thumb + caption)
                sheet.paste(image.convert("RGB").resize((thumb, thumb), Image.Resampling.LANCZOS), (x, y))
                label = "/".join(
                    str(row[c])[:3] for c in ("gender", "age_group", "ethnicity") if isinstance(row[c], str)
                )
                draw.text((x + 2, y + thumb), label, fill="black")
            sheet.save(tmp / f"{emotion}.png", optimize=False)
            counts[str(emotion)] = len(rows)
    log.info("contact sheets for %s: %s", variant.name, counts)
    return counts
