import io

import numpy as np
import pandas as pd
import pytest

from fersynth.annotate.relabel import RelabelConfig, relabel_variant
from fersynth.demo.renderer import FaceSpec, render_face
from fersynth.modeling.small_cnn import ModelConfig
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant, VariantWriter

FAST = ModelConfig(size=32, channels=(8, 16), epochs=12, batch_size=16, learning_rate=3e-3)
CLASSES = ("happy", "surprise")  # clearly different faces: a tiny model learns them in seconds


@pytest.fixture
def noisy(tmp_path):
    """45 train/val faces per class with 5 flipped labels each; 5 test faces per class, 1 flipped."""
    rng = np.random.default_rng(0)
    truth, n = [], 0
    with VariantWriter(tmp_path / "src") as writer:
        for true in CLASSES:
            for i in range(50):
                split = "test" if i >= 45 else ("val" if i >= 40 else "train")
                flipped = i % 10 == 3 or i == 47
                given = CLASSES[1 - CLASSES.index(true)] if flipped else true
                face = render_face(
                    FaceSpec(emotion=true, identity=n, angle=float(rng.uniform(-8, 8)), noise=4.0),
                    (48, 48),
                    "L",
                    seed=n,
                )
                buffer = io.BytesIO()
                face.save(buffer, format="PNG")
                writer.add(
                    {
                        "key": f"k{n:03d}",
                        "source": f"s{n}",
                        "split": split,
                        "dataset": "toy",
                        "emotion": given,
                        "label": BASIC7.index(given),
                        "label_space": "basic7",
                    },
                    face,
                    buffer.getvalue(),
                )
                truth.append({"source": f"s{n}", "true_emotion": true})
                n += 1
        writer.commit()
    pd.DataFrame(truth).to_csv(tmp_path / "truth.csv", index=False)
    return tmp_path


def test_self_filter_finds_flips_and_keeps_images_and_test_labels(noisy):
    config = RelabelConfig(rounds=2, model=FAST, compare_methods=False)
    relabel_variant(noisy / "src", noisy / "out", config, noisy / "m.json", noisy / "truth.csv")
    before, after = Variant(noisy / "src").manifest, Variant(noisy / "out").manifest
    assert sorted(after["key"]) == sorted(before["key"])  # no image added or removed
    merged = before.merge(after, on="key", suffixes=("_before", "_after"))
    assert (merged["sha256_before"] == merged["sha256_after"]).all()
    assert (merged["split_before"] == merged["split_after"]).all()
    test = merged[merged["split_before"] == "test"]
    assert (test["label_before"] == test["label_after"]).all()  # scope train_val
    table = pd.read_csv(noisy / "out" / "relabel.csv")
    assert set(table["split"]) == {"train", "val"}
    assert (table["changed"] == (table["old_label"] != table["new_label"])).all()
    scores = pd.read_json(noisy / "m.json", typ="series")["against_ground_truth"]["self_filter"]
    assert scores["flipped"] == 10
    assert scores["recall"] >= 0.75 and scores["precision"] > 3 * scores["random_baseline_precision"]
    assert scores["correct_after"] > scores["correct_before"]


def test_confident_learning_drop_moves_issues_to_quarantine(noisy):
    config = RelabelConfig(method="confident_learning", action="drop", folds=3, model=FAST, compare_methods=False)
    report = relabel_variant(noisy / "src", noisy / "out", config, noisy / "m.json", noisy / "truth.csv")
    table = pd.read_csv(noisy / "out" / "relabel.csv")
    dropped = table[table["new_label"] == -1]
    assert len(dropped) == report["quarantined"] > 0
    assert not set(dropped["key"]) & set(Variant(noisy / "out").manifest["key"])
    scores = pd.read_json(noisy / "m.json", typ="series")["against_ground_truth"]["confident_learning"]
    assert scores["precision"] > 3 * scores["random_baseline_precision"]


def test_scope_all_relabels_test_too(noisy):
    config = RelabelConfig(scope="all", rounds=1, model=FAST, compare_methods=False)
    relabel_variant(noisy / "src", noisy / "out", config)
    assert "test" in set(pd.read_csv(noisy / "out" / "relabel.csv")["split"])


def test_bad_method_fails_fast():
    with pytest.raises(ValueError, match="method"):
        RelabelConfig(method="vote")


def test_consensus_changes_only_what_every_model_agrees_on():
    from fersynth.annotate.relabel.methods import _unanimous

    labels = np.array([0, 0, 1, 1])
    one = np.array([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.2, 0.8]])  # says: 1, 0, 0, 1
    two = np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.3, 0.7]])  # says: 1, 0, 1, 1
    result = _unanimous([one, two], labels, np.ones(4, int))
    assert result.new_labels.tolist() == [1, 0, 1, 1]  # image 2: the models disagree, its label stays
    assert result.confidence[0] == pytest.approx(0.85)


def test_a_consensus_of_seeds_changes_fewer_labels_more_precisely_and_the_stability_check_reports_agreement(noisy):
    """One model's relabelling hangs on its seed; three that must agree change fewer, mostly flipped, labels.
    The stability check runs the method again with other seeds and says how far the two runs' changes agree."""
    scores = {}
    for consensus in (1, 3):
        config = RelabelConfig(rounds=2, model=FAST, compare_methods=False, consensus=consensus, stability_check=True)
        metrics_path = noisy / f"m{consensus}.json"
        relabel_variant(noisy / "src", noisy / f"out{consensus}", config, metrics_path, noisy / "truth.csv")
        metrics = pd.read_json(metrics_path, typ="series")
        scores[consensus] = metrics["against_ground_truth"]["self_filter"] | {"stability": metrics["stability"]}
    single, agreed = scores[1], scores[3]
    assert agreed["changed"] <= single["changed"] and agreed["precision"] >= single["precision"]
    stability = agreed["stability"]
    assert stability["changed"][0] == agreed["changed"]
    assert 0 <= stability["jaccard"] <= 1 and stability["changed_by_both"] <= min(stability["changed"])
