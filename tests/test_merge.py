import pytest

from fersynth.ingest.merge import LabelConflict, MergeConfig, merge_variants
from fersynth.variants.variant import Variant, VariantWriter
from tests.conftest import add_basic7_image, image_bytes


def _variant(path, dataset, rows, size=(48, 48), mode="L"):
    """rows: (key, split, emotion, label, identity[, emotion the face is drawn with])."""
    with VariantWriter(path) as writer:
        for key, split, emotion, label, identity, *drawn in rows:
            data = image_bytes(drawn[0] if drawn else emotion, size, mode, identity=identity)
            add_basic7_image(writer, key, split, emotion, label, data, dataset=dataset)
        writer.commit()
    return path


def test_union_keeps_provenance_and_native_formats(tmp_path):
    fer = _variant(tmp_path / "fer", "fer2013", [("a", "train", "happy", 3, 1), ("b", "test", "sad", 5, 2)])
    nhfi = _variant(tmp_path / "nhfi", "nhfi", [("a", "train", "happy", 3, 3)], size=(224, 224))
    report = merge_variants({"fer2013": fer, "nhfi": nhfi}, tmp_path / "out", MergeConfig(per_class_cap={}))
    manifest = Variant(tmp_path / "out").manifest.set_index("key")
    assert sorted(manifest.index) == ["fer2013/a", "fer2013/b", "nhfi/a"]
    assert manifest.loc["nhfi/a", ["dataset", "width"]].tolist() == ["nhfi", 224]
    assert manifest.loc["fer2013/b", "split"] == "test"
    assert report["per_dataset"] == {"fer2013": 2, "nhfi": 1}


def test_affectnet_is_capped_per_class_and_keeps_splits(tmp_path):
    rows = [
        (f"{label}-{i}", ["train", "val", "test"][i % 3], e, label, 10 * label + i)
        for label, e in [(0, "angry"), (3, "happy")]
        for i in range(9)
    ]
    affectnet = _variant(tmp_path / "aff", "affectnet", rows, size=(64, 64), mode="RGB")
    report = merge_variants({"affectnet": affectnet}, tmp_path / "out", MergeConfig(per_class_cap={"affectnet": 4}))
    merged = Variant(tmp_path / "out").manifest
    assert merged.groupby("label").size().tolist() == [4, 4]
    source_split = {f"affectnet/{key}": split for key, split, *_ in rows}
    assert all(source_split[k] == s for k, s in zip(merged["key"], merged["split"], strict=True))
    assert report["dropped_by_rule"] == 10 and report["read"] == 18


def test_same_picture_different_labels_is_refused(tmp_path):
    fer = _variant(tmp_path / "fer", "fer2013", [("a", "train", "happy", 3, 1)])
    nhfi = _variant(tmp_path / "nhfi", "nhfi", [("x", "train", "sad", 5, 1, "happy")])  # same picture, other label
    with pytest.raises(LabelConflict, match="different labels"):
        merge_variants({"fer2013": fer, "nhfi": nhfi}, tmp_path / "out", MergeConfig(per_class_cap={}))
    assert not (tmp_path / "out").exists()


def test_cross_dataset_duplicate_kept_once_preferring_test(tmp_path):
    fer = _variant(tmp_path / "fer", "fer2013", [("a", "train", "happy", 3, 1)])
    nhfi = _variant(tmp_path / "nhfi", "nhfi", [("x", "test", "happy", 3, 1)])
    report = merge_variants({"fer2013": fer, "nhfi": nhfi}, tmp_path / "out", MergeConfig(per_class_cap={}))
    assert Variant(tmp_path / "out").manifest["key"].tolist() == ["nhfi/x"]
    assert report["cross_dataset_duplicates"] == 1 and report["duplicates"] == 1
