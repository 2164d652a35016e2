import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fersynth.generate.smote import ParentTrackingSMOTE, SmoteConfig, build_smote_variant
from fersynth.variants.variant import Variant, VariantWriter
from tests.conftest import image_bytes

EMOTIONS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


@pytest.fixture
def source(tmp_path):
    """Train counts 12 / 3 / 6 / 20 / 10 / 8 / 10, plus val and test rows."""
    counts = {"angry": 12, "disgust": 3, "fear": 6, "happy": 20, "neutral": 10, "sad": 8, "surprise": 10}
    with VariantWriter(tmp_path / "src") as writer:
        n = 0
        for label, emotion in enumerate(EMOTIONS):
            for i in range(counts[emotion] + 4):
                split = "train" if i < counts[emotion] else ("val" if i % 2 else "test")
                data = image_bytes(emotion, identity=n)
                writer.add(
                    {
                        "key": f"k{n:03d}",
                        "source": f"s{n}",
                        "dataset": "fer2013",
                        "split": split,
                        "emotion": emotion,
                        "label": label,
                        "label_space": "basic7",
                    },
                    Image.open(io.BytesIO(data)),
                    data,
                )
                n += 1
        writer.commit()
    return tmp_path / "src"


def test_train_is_exactly_balanced_and_val_test_untouched(source, tmp_path):
    report = build_smote_variant(source, tmp_path / "out", SmoteConfig(target_per_class=10, k_neighbors=3, seed=1))
    out, src = Variant(tmp_path / "out").manifest, Variant(source).manifest
    train = out[out["split"] == "train"]
    assert train.groupby("label").size().tolist() == [10] * 7
    # no synthetic row outside train
    assert not out.loc[out["split"] != "train", "synthetic"].any()
    # val and test: same rows, same bytes
    held_out = lambda m: m[m["split"] != "train"].sort_values("key")  # noqa: E731
    assert (
        held_out(out)[["key", "sha256", "split", "label"]].values.tolist()
        == held_out(src)[["key", "sha256", "split", "label"]].values.tolist()
    )
    original = {row["key"]: data for row, data in Variant(source).iter_bytes(held_out(src))}
    copied = {row["key"]: data for row, data in Variant(tmp_path / "out").iter_bytes(held_out(out))}
    assert copied == original
    # happy had 20 real rows: 10 kept, 10 quarantined as undersampled; disgust got augmentation + SMOTE
    assert report["train_before"] == {
        "angry": 12,
        "disgust": 3,
        "fear": 6,
        "happy": 20,
        "neutral": 10,
        "sad": 8,
        "surprise": 10,
    }
    assert report["quarantine_reasons"] == {"rule": 12}  # 10 happy + 2 angry
    disgust = train[train["emotion"] == "disgust"]
    assert disgust["generator"].value_counts().to_dict() == {"image_generator": 3, "smote": 4}
    assert out["sha256"].is_unique


def test_synthetic_rows_name_real_parents(source, tmp_path):
    build_smote_variant(source, tmp_path / "out", SmoteConfig(target_per_class=10, k_neighbors=3))
    out = Variant(tmp_path / "out").manifest
    synthetic = out[out["synthetic"]]
    augmented = synthetic[synthetic["generator"] == "image_generator"]
    real_train = set(Variant(source).manifest.query("split == 'train'")["key"])
    assert set(augmented["parent"]) <= real_train
    smote_parents = {p for pair in synthetic.loc[synthetic["generator"] == "smote", "parent"] for p in pair.split(";")}
    assert smote_parents <= real_train | set(augmented["key"])
    assert (synthetic.groupby("label")["parent"].count() > 0).all()


def test_parent_tracking_matches_the_samples():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (40, 6)).astype(float)
    y = np.array([0] * 30 + [1] * 10)
    smote = ParentTrackingSMOTE(k_neighbors=3, random_state=0)
    X_res, _ = smote.fit_resample(X, y)
    parents = smote.synthetic_parents(y)
    assert len(parents) == len(X_res) - len(X) == 20
    for (a, b, step), sample in zip(parents, X_res[len(X) :], strict=True):
        assert y[a] == y[b] == 1
        np.testing.assert_allclose(sample, X[a] + step * (X[b] - X[a]))


def test_same_seed_same_variant(source, tmp_path):
    config = SmoteConfig(target_per_class=10, k_neighbors=3, seed=5)
    build_smote_variant(source, tmp_path / "a", config)
    build_smote_variant(source, tmp_path / "b", config)
    assert (tmp_path / "a" / "manifest.parquet").read_bytes() == (tmp_path / "b" / "manifest.parquet").read_bytes()
    shards = lambda d: sorted(p.read_bytes() for p in (d / "images").glob("*.parquet"))  # noqa: E731
    assert shards(tmp_path / "a") == shards(tmp_path / "b")


def test_smote_pixels_lie_between_their_parents(source, tmp_path):
    """Interpolation in uint8 would wrap around (255 + 1 = 0) and give salt-and-pepper images."""
    build_smote_variant(source, tmp_path / "out", SmoteConfig(target_per_class=10, k_neighbors=3))
    variant = Variant(tmp_path / "out")
    images = {row["key"]: np.asarray(image, dtype=int) for row, image in variant.iter_images()}
    smoted = variant.manifest[variant.manifest["generator"] == "smote"]
    assert len(smoted) > 0
    for row in smoted.itertuples():
        a, b = (images[key] for key in row.parent.split(";"))
        sample = images[row.key]
        assert (sample >= np.minimum(a, b) - 1).all() and (sample <= np.maximum(a, b) + 1).all()


def test_report_accounting(source, tmp_path):
    report = build_smote_variant(source, tmp_path / "out", SmoteConfig(target_per_class=10, k_neighbors=3))
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert report["kept"] + len(quarantine) == report["read"]


def test_validation_proves_no_leak_and_balance(source, tmp_path):
    from fersynth.checks.validate import SuiteConfig, ValidationFailed, validate_variant

    build_smote_variant(source, tmp_path / "out", SmoteConfig(target_per_class=10, k_neighbors=3))
    suite = SuiteConfig(min_per_class=0, synthetic_splits=("train",), balanced_splits=("train",))
    assert validate_variant(tmp_path / "out", suite, tmp_path / "q.json", tmp_path / "docs")["success"]
    # the source itself is not balanced, and a synthetic test row must fail the suite
    with pytest.raises(ValidationFailed):
        validate_variant(
            source, SuiteConfig(min_per_class=0, balanced_splits=("train",)), tmp_path / "q.json", tmp_path / "docs"
        )
    leaked = Variant(tmp_path / "out").manifest.copy()
    leaked.loc[leaked["split"] == "test", "synthetic"] = True
    leaked.to_parquet(tmp_path / "out" / "manifest.parquet")
    with pytest.raises(ValidationFailed):
        validate_variant(tmp_path / "out", suite, tmp_path / "q.json", tmp_path / "docs")
