from collections import Counter

import pytest

from fersynth.errors import InputError
from fersynth.ingest import ingest
from fersynth.ingest.export import export_variant
from fersynth.variants.variant import Variant


def test_export_writes_one_file_per_image_in_class_folders(tiny_demo, tmp_path):
    ingest("nhfi", tiny_demo / "nhfi", tmp_path / "nhfi")
    variant = Variant(tmp_path / "nhfi")
    written = export_variant(tmp_path / "nhfi", tmp_path / "export")
    files = sorted(p for p in (tmp_path / "export").rglob("*") if p.is_file() and p.name != ".fersynth-output")
    assert written == len(files) == len(variant.manifest)
    on_disk = Counter((p.parent.parent.name, p.parent.name) for p in files)
    expected = Counter((r.split, f"{r.label}_{r.emotion}") for r in variant.manifest.itertuples())
    assert on_disk == expected
    row, data = next(variant.iter_bytes())
    stem = row["key"].replace("/", "__").rsplit(".", 1)[0]
    assert (
        tmp_path / "export" / row["split"] / f"{row['label']}_{row['emotion']}" / f"{stem}.png"
    ).read_bytes() == data


def _variant_with_keys(path, keys, **fields):
    """A variant with ``keys``, its manifest then given ``fields``, as a hostile manifest would."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from fersynth.variants.variant import MANIFEST_SCHEMA, VariantWriter

    with VariantWriter(path) as writer:
        for i, key in enumerate(keys):
            record = {"key": key, "source": key, "split": "train", "emotion": "happy", "label": 3}
            writer.add(record, Image.new("L", (16, 16), i))
        writer.commit()
    manifest = Variant(path).manifest
    for column, value in fields.items():
        manifest[column] = value
    pq.write_table(
        pa.Table.from_pandas(manifest, schema=MANIFEST_SCHEMA, preserve_index=False), path / "manifest.parquet"
    )
    return path


@pytest.mark.parametrize(
    "keys, fields",
    [
        (["/etc/passwd.png"], {}),
        (["../../escape.png"], {}),
        (["a/../../escape.png"], {}),
        (["ok.png"], {"split": "../.."}),
        (["ok.png"], {"emotion": "x/../../.."}),
        (["a/b.png", "a__b.png"], {}),  # both export as a__b.png
    ],
)
def test_a_manifest_that_would_write_outside_or_clash_is_refused(tmp_path, keys, fields):
    variant = _variant_with_keys(tmp_path / "data" / "v", keys, **fields)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InputError):
        export_variant(variant, tmp_path / "data" / "out" / "export")
    assert sorted(tmp_path.rglob("*")) == before


def test_export_out_that_is_not_an_export_is_refused_through_the_cli(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from fersynth.cli import main

    monkeypatch.chdir(tmp_path)
    variant = _variant_with_keys(tmp_path / "v", ["a.png", "b.png"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for out in (".", "mine", "v"):
        result = CliRunner().invoke(main, ["export", "v", out])
        assert result.exit_code == 2 and "refusing" in result.output and "Traceback" not in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and (variant / "manifest.parquet").exists()
    assert CliRunner().invoke(main, ["export", "v", "browse"]).exit_code == 0
    assert CliRunner().invoke(main, ["export", "v", "browse", "--flat"]).exit_code == 0  # an earlier export
    assert sorted(p.name for p in (tmp_path / "browse" / "3_happy").iterdir()) == ["a.png", "b.png"]
