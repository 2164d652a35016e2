import numpy as np
import pytest
from sklearn.metrics import classification_report as sk_report
from sklearn.metrics import f1_score

from fersynth.modeling.metrics import (
    classification_report,
    group_accuracy,
    mcnemar,
    mean_interval,
    normalised_confusion,
    one_class_check,
    paired_bootstrap,
)

CLASSES = ("angry", "happy", "sad")
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
Y_PRED = [0, 1, 0, 1, 1, 2, 0, 2, 1, 1]


def test_report_matches_scikit_learn_on_a_known_case():
    ours = classification_report(Y_TRUE, Y_PRED, CLASSES)
    theirs = sk_report(Y_TRUE, Y_PRED, target_names=CLASSES, output_dict=True)
    for name in (*CLASSES, "macro avg", "weighted avg"):
        for metric in ("precision", "recall"):
            assert ours[name][metric] == pytest.approx(theirs[name][metric])
        assert ours[name]["f1"] == pytest.approx(theirs[name]["f1-score"])
    assert ours["accuracy"] == pytest.approx(0.7)
    # by hand: happy has 3 true, 3 + 2 predicted, 3 right -> precision 3/5, recall 1
    assert (ours["happy"]["precision"], ours["happy"]["recall"]) == (pytest.approx(0.6), pytest.approx(1.0))
    assert ours["macro avg"]["f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))


def test_confusion_rows_are_normalised():
    matrix = normalised_confusion(Y_TRUE, Y_PRED, 3)
    np.testing.assert_allclose(matrix.sum(1), 1.0)
    assert matrix[2].tolist() == pytest.approx([0.25, 0.25, 0.5])


def test_group_accuracy_and_gap():
    result = group_accuracy([0, 0, 1, 1], [0, 1, 1, 1], ["female", "female", "male", "male"])
    assert result["per_group"] == {"female": 0.5, "male": 1.0}
    assert (result["worst"], result["best"], result["gap"]) == ("female", "male", 0.5)


def test_a_model_naming_one_class_is_caught_and_a_good_one_or_a_lopsided_test_set_is_not():
    """The old nhfi model: 14.3% for every group on a balanced 7-class set, because it named one class for
    every face; nothing downstream said so."""
    seven = tuple(f"c{i}" for i in range(7))
    labels = np.repeat(np.arange(7), 10)
    rng = np.random.default_rng(0)
    good = np.where(rng.random(70) < 0.8, labels, (labels + 1) % 7)
    collapsed = np.r_[np.full(66, 3), labels[66:]]  # names c3 for 66 of 70 faces (94%)
    check = one_class_check(labels, {0: good, 1: collapsed}, seven)
    assert check["one_class_seeds"] == [1] and check["top_class"] == "c3" and check["top_share"] == 0.9429
    assert check["trials"] == 2 and check["constant_accuracy"] == round(1 / 7, 4)
    gender = np.tile(["female", "male"], 35)  # five faces of each class in each group
    groups = group_accuracy(labels, np.full(70, 3), gender)  # what the fairness table showed: 1/7 everywhere
    assert groups["per_group"] == {"female": pytest.approx(1 / 7), "male": pytest.approx(1 / 7)}
    constant = one_class_check(labels, {0: np.full(70, 3), 1: np.full(70, 3)}, seven)
    assert constant["one_class_seeds"] == [0, 1] and constant["accuracy"] == constant["constant_accuracy"]
    assert one_class_check(labels, {0: good}, seven, share=0.9)["one_class_seeds"] == []
    # a test set that is 95% one class: naming it is what a good model does, not a collapse; but a model
    # no better than that constant answer still shows (accuracy == constant_accuracy)
    lopsided = np.r_[np.zeros(95, int), np.ones(5, int)]
    majority = one_class_check(lopsided, {0: np.zeros(100, int)}, seven)
    assert majority["one_class_seeds"] == [] and majority["accuracy"] == majority["constant_accuracy"] == 0.95
    assert one_class_check(lopsided, {0: lopsided}, seven)["accuracy"] > 0.95


def test_the_gap_interval_covers_a_real_gap_excludes_zero_and_widens_when_groups_shrink():
    rng = np.random.default_rng(0)

    def sample(per_group: int):
        groups = np.array(["a"] * per_group + ["b"] * per_group)
        truth = np.zeros(2 * per_group, int)
        right = np.concatenate([rng.random(per_group) < 0.8, rng.random(per_group) < 0.5])  # a: 80%, b: 50%
        return truth, np.where(right, 0, 1), groups

    large = group_accuracy(*sample(400))
    low, high = large["gap_ci95"]
    assert large["best"] == "a" and 0.1 < low < large["gap"] < high and low < 0.3 < high  # covers the true 30 points
    small = group_accuracy(*sample(20))
    assert small["gap_ci95"][1] - small["gap_ci95"][0] > 2 * (high - low)
    assert large["size"] == {"a": 400, "b": 400}
    # two trials' predictions on the same 4 images: an image is one unit, resampled with both its trials
    tiled = group_accuracy([0, 0, 1, 1] * 2, [0, 1, 1, 1, 0, 0, 1, 1], ["f", "f", "m", "m"] * 2, images=4)
    assert tiled["per_group"] == {"f": 0.75, "m": 1.0} and tiled["size"] == {"f": 2, "m": 2}
    assert tiled["per_group_ci95"]["m"] == [1.0, 1.0] and tiled["per_group_ci95"]["f"] == [0.5, 1.0]


def test_mcnemar_and_bootstrap_on_a_clear_and_a_null_case():
    a = np.array([True] * 50 + [False] * 50)
    better = a.copy()
    better[50:80] = True  # B also gets 30 images right that A gets wrong
    clear = mcnemar(a, better)
    assert (clear["only_a_correct"], clear["only_b_correct"]) == (0, 30) and clear["p_value"] < 1e-6
    assert mcnemar(a, a)["p_value"] == 1.0
    interval = paired_bootstrap(a, better, seed=1)
    assert interval["difference"] == pytest.approx(0.3) and interval["ci95"][0] > 0.15
    null = paired_bootstrap(a, a)
    assert null["ci95"] == [0.0, 0.0]


def test_mean_interval_over_seeds():
    result = mean_interval([0.60, 0.62, 0.64])
    assert result["mean"] == pytest.approx(0.62) and result["n"] == 3
    # t(0.975, 2) = 4.303, sd 0.02, n 3 -> half-width 0.0497
    assert result["ci95"][1] - result["mean"] == pytest.approx(4.3027 * 0.02 / np.sqrt(3), rel=1e-3)
