import io

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fersynth.errors import InputError
from fersynth.paths import VariantLayout
from fersynth.variants.variant import MANIFEST_COLUMNS, Variant, VariantWriter, pixel_sha256
from tests.conftest import image_bytes


def _record(key, split="train", emotion="happy", label=3):
    return {
        "key": key,
        "source": f"src/{key}",
        "dataset": "toy",
        "label_space": "basic7",
        "emotion": emotion,
        "label": label,
        "split": split,
    }


def test_roundtrip_keeps_bytes_and_manifest_columns(tmp_path):
    png = image_bytes("happy", identity=1)
    jpg = image_bytes("sad", fmt="JPEG", identity=2)
    with VariantWriter(tmp_path / "v", row_group_images=1) as writer:
        writer.add(_record("a"), Image.open(io.BytesIO(png)), png)
        writer.add(_record("b", "test", "sad", 5), Image.open(io.BytesIO(jpg)), jpg)
        writer.reject("src/c", "corrupt image: empty file")
        report = writer.commit()
    variant = Variant(tmp_path / "v")
    assert list(variant.manifest.columns) == list(MANIFEST_COLUMNS)
    stored = {row["key"]: data for row, data in variant.iter_bytes()}
    assert stored == {"a": png, "b": jpg}
    assert report["read"] == 3 and report["kept"] == 2 and report["quarantined"] == 1
    assert pd.read_csv(tmp_path / "v" / "quarantine.csv").to_dict("records") == [
        {"source": "src/c", "reason": "corrupt image: empty file"}
    ]
    assert variant.manifest.set_index("key").loc["b", "format"] == "JPEG"


def test_sha256_is_of_pixels_not_encoding():
    image = Image.open(io.BytesIO(image_bytes("fear")))
    buffer = io.BytesIO()
    image.save(buffer, format="BMP")
    assert pixel_sha256(Image.open(buffer)) == pixel_sha256(image)
    assert pixel_sha256(image.convert("RGB")) != pixel_sha256(image)


def test_failed_stage_leaves_previous_output_untouched(tmp_path):
    png = image_bytes()
    with VariantWriter(tmp_path / "v") as writer:
        writer.add(_record("a"), Image.open(io.BytesIO(png)), png)
        writer.commit()
    before = (tmp_path / "v" / "manifest.parquet").read_bytes()
    with pytest.raises(RuntimeError), VariantWriter(tmp_path / "v") as writer:
        writer.add(_record("zzz"), Image.open(io.BytesIO(png)), png)
        raise RuntimeError("crash mid-stage")
    assert (tmp_path / "v" / "manifest.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # no staging directory left behind


def test_demote_moves_row_to_quarantine_and_prunes_shards(tmp_path):
    png = image_bytes()
    with VariantWriter(tmp_path / "v") as writer:
        writer.add(_record("a"), Image.open(io.BytesIO(png)), png)
        writer.add(_record("b"), Image.open(io.BytesIO(png)), png)
        writer.demote({"b": ("duplicate: same pixels as src/a", "duplicate")})
        report = writer.commit()
    assert report == report | {"read": 2, "kept": 1, "quarantined": 1, "duplicates": 1}
    shard_keys = [
        k
        for shard in (tmp_path / "v" / "images").glob("*.parquet")
        for k in pq.read_table(shard).column("key").to_pylist()
    ]
    assert shard_keys == ["a"]


def test_duplicate_keys_are_refused(tmp_path):
    png = image_bytes()
    with pytest.raises(ValueError, match="duplicate key"), VariantWriter(tmp_path / "v") as writer:
        writer.add(_record("a"), Image.open(io.BytesIO(png)), png)
        writer.add(_record("a"), Image.open(io.BytesIO(png)), png)


def test_shards_roll_over_at_size_limit(tmp_path):
    png = image_bytes()
    with VariantWriter(tmp_path / "v", shard_max_bytes=len(png) * 2, row_group_images=1) as writer:
        for i in range(5):
            writer.add(_record(f"k{i}"), Image.open(io.BytesIO(png)), png)
        writer.commit()
    variant = Variant(tmp_path / "v")
    assert variant.manifest["shard"].nunique() == 3
    assert [row["key"] for row, _ in variant.iter_bytes()] == [f"k{i}" for i in range(5)]


def test_closing_without_commit_writes_nothing(tmp_path):
    png = image_bytes()
    with pytest.raises(RuntimeError, match="without commit"), VariantWriter(tmp_path / "v") as writer:
        writer.add(_record("a"), Image.open(io.BytesIO(png)), png)
    assert not (tmp_path / "v").exists()


def test_a_damaged_manifest_or_shard_is_a_one_line_input_error(tmp_path):
    png = image_bytes("happy", identity=1)
    with VariantWriter(tmp_path / "v") as writer:
        writer.add(_record("a"), Image.open(io.BytesIO(png)), png)
        writer.commit()
    shard = VariantLayout(tmp_path / "v").shard(0)
    shard.write_bytes(shard.read_bytes()[:-40])  # cut short: parquet's footer is gone
    with pytest.raises(InputError, match=rf"{shard.name} is not a readable parquet file \(.+\): the variant is dam"):
        list(Variant(tmp_path / "v").iter_bytes())
    manifest = tmp_path / "v" / "manifest.parquet"
    manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])
    with pytest.raises(InputError, match="manifest.parquet is not a readable parquet file") as refused:
        Variant(tmp_path / "v").manifest  # noqa: B018 (the read is the test)
    assert "\n" not in str(refused.value)
