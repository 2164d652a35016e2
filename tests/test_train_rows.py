import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fersynth.generate.augmented import AugmentedConfig, generate_augmented
from fersynth.generate.gate import GateConfig
from fersynth.train.recipe import TrainConfig
from fersynth.train.rows import training_rows
from fersynth.train.train import arrays
from fersynth.variants.labels import CASME2
from fersynth.variants.variant import MANIFEST_SCHEMA, Variant, VariantWriter
from tests.conftest import ingested_workspace, tiny_train_config


@pytest.fixture(scope="module")
def workspace(tiny_demo, tmp_path_factory):
    with ingested_workspace(tmp_path_factory, "rows", tiny_demo) as root:
        generate_augmented(root / "fer2013", root / "aug", AugmentedConfig(per_class=4), GateConfig(detector="none"))
        yield root


def small(root, **overrides):
    return tiny_train_config(root, size=16, **overrides)


def casme_like(out, subjects: int, clips: int, frames: int = 3):
    """A CASME II-shaped variant: every subject shows clips ``EP00``, ``EP01``, ... (CASME II's clip names
    repeat across subjects), frames of a clip share its label; subject 00 is the test split."""
    rng = np.random.default_rng(0)
    with VariantWriter(out) as writer:
        for subject in range(subjects):
            for clip in range(clips):
                label = (subject + clip) % len(CASME2)
                for frame in range(frames):
                    key = f"sub{subject:02d}/EP{clip:02d}/img{frame}.jpg"
                    record = {
                        "key": key,
                        "source": key,
                        "dataset": "casme2",
                        "label_space": "casme2",
                        "label": label,
                        "emotion": CASME2[label],
                        "subject": f"{subject:02d}",
                        "clip": f"EP{clip:02d}",
                        "frame": frame,
                        "split": "test" if subject == 0 else "train",
                    }
                    writer.add(record, Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L"))
        writer.commit()
    return out


def permuted_copy(variant_dir, out, seed: int = 1):
    """The same variant with its manifest rows in another order."""
    shutil.copytree(variant_dir, out)
    manifest = Variant(out).manifest
    shuffled = manifest.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    assert list(shuffled["key"]) != list(manifest["key"])
    pq.write_table(
        pa.Table.from_pandas(shuffled, schema=MANIFEST_SCHEMA, preserve_index=False), out / "manifest.parquet"
    )
    return out


def test_validation_is_real_train_rows_only_and_synthetic_rows_are_capped(workspace):
    selected = training_rows(small(workspace, variants=(str(workspace / "aug"),), synthetic_per_class=2))
    rows, classes = selected.splits, selected.classes
    assert not rows["val"]["synthetic"].any() and not rows["test"]["synthetic"].any()
    assert set(rows["train"]["key"]).isdisjoint(rows["val"]["key"])
    generated = rows["train"][rows["train"]["synthetic"]]
    assert generated.groupby("label").size().max() <= 2 and len(generated) == 2 * len(classes)
    assert set(rows["test"]["split"]) == {"test"}
    assert selected.validation["grouped_by"] == "row"


def test_a_cap_above_the_synthetic_count_trains_on_the_same_rows_in_the_same_order_as_no_cap(workspace):
    # a sweep over synthetic_per_class must not jump between "all" and "more than there are" from row order alone
    uncapped = training_rows(small(workspace, variants=(str(workspace / "aug"),))).splits
    capped = training_rows(small(workspace, variants=(str(workspace / "aug"),), synthetic_per_class=100)).splits
    assert uncapped["train"]["synthetic"].sum() == 28
    assert list(uncapped["train"]["key"]) == list(capped["train"]["key"])


def test_synthetic_rows_are_capped_at_a_ratio_of_the_real_rows_per_class(workspace):
    rows = training_rows(small(workspace, variants=(str(workspace / "aug"),), synthetic_ratio=0.1)).splits
    real = rows["train"][~rows["train"]["synthetic"]].groupby("label").size()
    generated = rows["train"][rows["train"]["synthetic"]].groupby("label").size()
    assert len(generated) > 0
    for label, n in generated.items():
        assert n == min(4, int(real[label] * 0.1)), label  # 4 generated per class exist (the fixture)
    uncapped = training_rows(small(workspace, variants=(str(workspace / "aug"),))).splits
    assert uncapped["train"]["synthetic"].sum() == 28 > rows["train"]["synthetic"].sum()


def test_a_set_too_small_to_stratify_still_splits(workspace):
    selected = training_rows(small(workspace, validation_fraction=0.02))  # fewer val rows than classes
    rows = selected.splits
    assert 0 < len(rows["val"]) < len(selected.classes)
    assert set(rows["train"]["key"]).isdisjoint(rows["val"]["key"])


def test_a_class_with_one_real_row_trains_and_is_left_out_of_validation(workspace, tmp_path):
    source = Variant(workspace / "fer2013")
    train_rows = source.manifest.query("split == 'train'")
    rare = train_rows["label"].value_counts().index[-1]  # keep one face of the rarest class in train
    lone = train_rows[train_rows["label"] == rare].iloc[0]["key"]
    with VariantWriter(tmp_path / "rare") as writer:
        for row, data in source.iter_bytes():
            if row["label"] != rare or row["split"] != "train" or row["key"] == lone:
                writer.copy(row, data)
        writer.commit()
    rows = training_rows(small(tmp_path, variants=(str(tmp_path / "rare"),))).splits
    assert lone in set(rows["train"]["key"]) and rare not in set(rows["val"]["label"])


def test_an_all_synthetic_variant_validates_on_its_own_rows(tmp_path):
    from fersynth.generate.artificial import ArtificialConfig, all_cells, generate_artificial

    config = ArtificialConfig(per_cell={"train": 2, "test": 1})
    generate_artificial(tmp_path / "art", config, GateConfig(detector="none"), cells=all_cells()[::10])
    rows = training_rows(TrainConfig(variants=(str(tmp_path / "art"),))).splits
    assert len(rows["val"]) > 0 and rows["val"]["synthetic"].all()
    assert set(rows["train"]["key"]).isdisjoint(rows["val"]["key"]) and len(rows["train"]) + len(rows["val"]) == 56


def test_validation_holds_out_whole_subjects(tmp_path):
    variant = casme_like(tmp_path / "casme", subjects=7, clips=2)  # 6 train subjects: enough for a 20% split
    selected = training_rows(small(tmp_path, variants=(str(variant),)))
    fit, val = selected.splits["train"], selected.splits["val"]
    assert selected.validation == {"grouped_by": "subject", "groups": {"train": 4, "val": 2}}
    assert set(fit["subject"]).isdisjoint(val["subject"]) and len(val) == 2 * 2 * 3  # 2 subjects x 2 clips x 3 frames
    assert set(selected.splits["test"]["subject"]) == {"00"}


def test_one_train_subject_holds_out_whole_clips_and_one_clip_single_frames(tmp_path):
    by_subject = training_rows(small(tmp_path, variants=(str(casme_like(tmp_path / "s", subjects=3, clips=2)),)))
    assert by_subject.validation == {"grouped_by": "subject", "groups": {"train": 1, "val": 1}}
    by_clip = training_rows(small(tmp_path, variants=(str(casme_like(tmp_path / "a", subjects=2, clips=4)),)))
    fit, val = by_clip.splits["train"], by_clip.splits["val"]
    assert by_clip.validation["grouped_by"] == "clip" and len(val) > 0
    clips = [set(zip(rows["subject"], rows["clip"], strict=True)) for rows in (fit, val)]
    assert clips[0].isdisjoint(clips[1])  # EP00 of subject 01 and EP00 of subject 02 are different clips
    assert len(clips[0] | clips[1]) == 4 and len(val) % 3 == 0  # whole clips of 3 frames
    by_row = training_rows(small(tmp_path, variants=(str(casme_like(tmp_path / "b", subjects=2, clips=1)),)))
    assert by_row.validation["grouped_by"] == "row"


@pytest.mark.parametrize("subjects,clips", [(7, 2), (2, 1)])  # grouped by subject, and row by row
def test_the_manifest_row_order_changes_no_split_and_no_training_order(tmp_path, subjects, clips):
    variant = casme_like(tmp_path / "casme", subjects=subjects, clips=clips)
    permuted = permuted_copy(variant, tmp_path / "permuted")
    original = training_rows(small(tmp_path, variants=(str(variant),)))
    shuffled = training_rows(small(tmp_path, variants=(str(permuted),)))
    for split in ("train", "val", "test"):
        assert list(original.splits[split]["key"]) == list(shuffled.splits[split]["key"]), split
    assert original.validation == shuffled.validation


def test_a_permuted_manifest_feeds_training_the_same_images_in_the_same_order(tmp_path, monkeypatch):
    # training is a seeded function of these arrays (tests/test_data_parallel.py checks it is exact)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the array cache
    variant = casme_like(tmp_path / "casme", subjects=7, clips=2)
    permuted = permuted_copy(variant, tmp_path / "permuted")
    fed = []
    for path in (variant, permuted):
        config = small(tmp_path, variants=(str(path),))
        splits = training_rows(config).splits
        fed.append({split: arrays(rows, config) for split, rows in splits.items()})
    for split in ("train", "val", "test"):
        assert np.array_equal(fed[0][split][0], fed[1][split][0]) and np.array_equal(fed[0][split][1], fed[1][split][1])


def test_a_scarce_control_keeps_its_share_per_class_and_the_same_validation(workspace):
    full = training_rows(small(workspace))
    half = training_rows(small(workspace, real_fraction=0.5))
    assert half.splits["val"]["key"].tolist() == full.splits["val"]["key"].tolist()  # checkpoints chosen alike
    assert set(half.splits["train"]["key"]) < set(full.splits["train"]["key"])
    per_class_full = full.splits["train"]["label"].value_counts()
    per_class_half = half.splits["train"]["label"].value_counts()
    assert all(per_class_half[c] == max(1, round(0.5 * n)) for c, n in per_class_full.items())
    # the benefit's variant holds the same real rows: it trains on the same half, plus its generated rows
    benefit = training_rows(small(workspace, variants=(str(workspace / "aug"),), real_fraction=0.5))
    real = benefit.splits["train"][~benefit.splits["train"]["synthetic"].astype(bool)]
    assert sorted(real["key"]) == sorted(half.splits["train"]["key"])
    assert benefit.splits["train"]["synthetic"].astype(bool).sum() > 0


def test_split_seed_keeps_the_rows_while_the_trial_seeds_change(workspace):
    baseline = training_rows(small(workspace, seed=0))
    other_seeds = training_rows(small(workspace, seed=6, split_seed=0))
    other_split = training_rows(small(workspace, seed=6))
    for split in ("train", "val", "test"):
        assert other_seeds.splits[split]["key"].tolist() == baseline.splits[split]["key"].tolist()
    assert other_split.splits["val"]["key"].tolist() != baseline.splits["val"]["key"].tolist()
    assert small(workspace, seed=6, split_seed=0).seeds == (6,)
