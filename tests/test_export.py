from collections import Counter

from fersynth.export import export_variant
from fersynth.ingest import ingest
from fersynth.variant import Variant


def test_export_writes_one_file_per_image_in_class_folders(tiny_demo, tmp_path):
    ingest("nhfi", tiny_demo / "nhfi", tmp_path / "nhfi")
    variant = Variant(tmp_path / "nhfi")
    written = export_variant(tmp_path / "nhfi", tmp_path / "export")
    files = sorted(p for p in (tmp_path / "export").rglob("*") if p.is_file())
    assert written == len(files) == len(variant.manifest)
    on_disk = Counter((p.parent.parent.name, p.parent.name) for p in files)
    expected = Counter((r.split, f"{r.label}_{r.emotion}") for r in variant.manifest.itertuples())
    assert on_disk == expected
    row, data = next(variant.iter_bytes())
    stem = row["key"].replace("/", "__").rsplit(".", 1)[0]
    assert (
        tmp_path / "export" / row["split"] / f"{row['label']}_{row['emotion']}" / f"{stem}.png"
    ).read_bytes() == data
