import io
from collections import Counter

from PIL import Image

from fersynth.ingest.splits import drop_duplicates, stratified_split, subject_split
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import VariantWriter
from tests.conftest import image_bytes


def _rows(n_per_class):
    return [
        {"key": f"{label}-{i:03d}", "label": label, "subject": f"s{i % 7}"}
        for label, n in enumerate(n_per_class)
        for i in range(n)
    ]


def test_stratified_split_hits_fractions_per_class():
    rows = _rows([100, 40, 10])
    stratified_split(rows, seed=1)
    for label, n in enumerate([100, 40, 10]):
        counts = Counter(r["split"] for r in rows if r["label"] == label)
        assert counts == {"train": round(n * 0.8), "val": round(n * 0.1), "test": n - round(n * 0.8) - round(n * 0.1)}


def test_stratified_split_is_deterministic_and_order_free():
    a, b = _rows([30, 30]), _rows([30, 30])
    stratified_split(a, seed=5)
    stratified_split(list(reversed(b)), seed=5)
    assert {r["key"]: r["split"] for r in a} == {r["key"]: r["split"] for r in b}
    c = _rows([30, 30])
    stratified_split(c, seed=6)
    assert {r["key"]: r["split"] for r in a} != {r["key"]: r["split"] for r in c}


def test_subject_split_never_shares_a_subject():
    rows = _rows([50, 50])
    assignment = subject_split(rows, seed=3)
    by_subject = {}
    for row in rows:
        by_subject.setdefault(row["subject"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_subject.values())
    assert set(assignment.values()) == {"train", "val", "test"}


def test_duplicates_keep_the_test_copy(tmp_path):
    png = image_bytes("angry")
    other = image_bytes("happy", identity=9)
    with VariantWriter(tmp_path / "v") as writer:
        for key, split, data in [("a", "train", png), ("b", "test", png), ("c", "val", png), ("d", "train", other)]:
            writer.add({"key": key, "source": key, "split": split}, Image.open(io.BytesIO(data)), data)
        assert drop_duplicates(writer) == 2
        assert [r["key"] for r in writer.rows] == ["b", "d"]
        assert sorted(reason for _, reason, _ in writer.quarantine.rows) == ["duplicate: same pixels as b"] * 2
        writer.commit()


def test_copies_under_different_labels_are_all_refused_as_a_conflict(tmp_path):
    png = image_bytes("angry")
    with VariantWriter(tmp_path / "v") as writer:
        for key, emotion, split in [("a", "angry", "train"), ("b", "sad", "test"), ("c", "angry", "val")]:
            record = {"key": key, "source": key, "split": split, "label_space": "basic7", "emotion": emotion}
            writer.add(record | {"label": BASIC7.index(emotion)}, Image.open(io.BytesIO(png)), png)
        for key, age in [("utk/1", 26.0), ("utk/2", 27.0)]:  # one face, two ages in its file names
            record = {"key": key, "source": key, "label_space": "none", "age": age, "gender": "female"}
            writer.add(record | {"ethnicity": "asian"}, Image.open(io.BytesIO(image_bytes(identity=4))))
        assert drop_duplicates(writer) == 5 and writer.rows == []
        reasons = {source: reason for source, reason, _ in writer.quarantine.rows}
        assert reasons["b"] == "conflicting labels: the same picture is a (angry), b (sad), c (angry)"
        assert (
            reasons["utk/1"]
            == "conflicting labels: the same picture is utk/1 (26.0/female/asian), utk/2 (27.0/female/asian)"
        )
        report = writer.commit()
    assert report["bad_input"] == 5 and report["duplicates"] == 0 and report["read"] == 5
