"""The numbers training, ``fersynth evaluate`` and ``fersynth compare`` report, as plain functions of labels
and predictions.

- per-class precision / recall / F1 with macro and weighted averages (paper 000 Tables 3-4, paper 003
  Fig. 8) and the row-normalised confusion matrix, from scikit-learn;
- accuracy per demographic group and the worst-best gap (fairness on the balanced set);
- whether a model answers one class whatever the face, or does no better than always naming the test set's
  most frequent class (its accuracies, group gaps and comparisons then describe the test set, not the model);
- a paired comparison of two models on the same test images: exact McNemar test on the discordant pairs
  and a paired bootstrap interval of the accuracy difference ("did synthetic data help, and is it real?");
- the mean and 95% t-interval over seeds.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_report(y_true, y_pred, classes: tuple[str, ...]) -> dict:
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    report = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average, zero_division=0)
        report[f"{average} avg"] = {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(len(y_true)),
        }
    report["accuracy"] = float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0
    return report


def one_class_check(labels, predicted: dict[int, np.ndarray], classes: tuple[str, ...], share: float = 0.9) -> dict:
    """Does a model (its trials' predictions on the same test images, by seed) answer one class?

    A trial is *one-class* when at least ``share`` of its predictions name one class that is not itself at
    least ``share`` of the labels (on such a test set answering it is what a good model does). The constant
    predictor is the best single answer, the test set's most frequent label: a model whose mean accuracy is
    at or below that one's has learnt nothing these images reward. Both make every accuracy of the model
    (per class, per group: a one-class model scores each group's share of that class) meaningless."""
    labels = np.asarray(labels, dtype=np.int64)
    label_share = np.bincount(labels, minlength=len(classes)) / max(len(labels), 1)
    constant = int(np.argmax(label_share))
    tops = {}
    for seed, answer in predicted.items():
        counts = np.bincount(np.asarray(answer, dtype=np.int64), minlength=len(classes))
        tops[seed] = (int(np.argmax(counts)), float(counts.max() / max(len(answer), 1)))
    top_seed = max(tops, key=lambda seed: tops[seed][1])  # the trial most concentrated on one class
    accuracy = float(np.mean([np.mean(np.asarray(p) == labels) for p in predicted.values()]))
    return {
        "top_class": classes[tops[top_seed][0]],
        "top_share": round(tops[top_seed][1], 4),
        "one_class_seeds": sorted(
            int(seed) for seed, (top, s) in tops.items() if s >= share and label_share[top] < share
        ),
        "trials": len(predicted),
        "accuracy": round(accuracy, 4),
        "constant_class": classes[constant],
        "constant_accuracy": round(float(label_share[constant]), 4),
    }


def normalised_confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Rows = true class, each row sums to 1 (0 where the class is absent)."""
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)), normalize="true")


def group_accuracy(y_true, y_pred, groups, images: int | None = None, n: int = 2000, seed: int = 0) -> dict:
    """Accuracy per group value, plus ``worst``, ``best`` and ``gap`` (best - worst), each with a 95%
    bootstrap interval (``per_group_ci95``, ``gap_ci95``; ``size``: images per group).

    ``images``: when the inputs are several trials' predictions on the same images, tiled (trial after
    trial), the number of images: an image is then resampled with all its trials, as one unit. Groups are
    resampled apart (their sizes are what the balanced set fixed), and the gap's interval is that of the
    difference between the two groups named worst and best on the full data."""
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups, dtype=object)
    per = {str(g): float(np.mean(y_true[groups == g] == y_pred[groups == g])) for g in sorted(set(groups.tolist()))}
    if not per:
        return {"per_group": {}, "worst": None, "best": None, "gap": None}
    worst, best = min(per, key=per.get), max(per, key=per.get)
    count = images or len(y_true)
    correct = (y_true == y_pred).reshape(-1, count).mean(0)  # per image: the share of trials right
    image_groups = groups[:count].astype(str)
    rng = np.random.default_rng(seed)
    samples, size = {}, {}
    for group in per:
        values = correct[image_groups == group]
        size[group] = int(len(values))
        samples[group] = values[rng.integers(0, len(values), size=(n, len(values)))].mean(1)

    def interval(values: np.ndarray) -> list[float]:
        return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]

    return {
        "per_group": per,
        "per_group_ci95": {group: interval(values) for group, values in samples.items()},
        "size": size,
        "worst": worst,
        "best": best,
        "gap": per[best] - per[worst],
        "gap_ci95": interval(samples[best] - samples[worst]),
    }


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test: ``b`` = images only A gets right, ``c`` = only B; p-value of a two-sided
    binomial test of b against b + c at 1/2."""
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    p = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p}


def paired_bootstrap(correct_a, correct_b, n: int = 2000, seed: int = 0) -> dict:
    """Accuracy difference B - A on the same images, with a 95% percentile interval and a two-sided
    p-value from resampling images (both models together). Inputs may be fractions (seed-averaged)."""
    a, b_ = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(n, len(a)))
    differences = b_[index].mean(1) - a[index].mean(1)
    low, high = np.percentile(differences, [2.5, 97.5])
    # two-sided: twice the share of resamples on the far side of zero (floored at one resample)
    p = min(1.0, 2 * max(min(np.mean(differences <= 0), np.mean(differences >= 0)), 1 / n))
    return {"difference": float(b_.mean() - a.mean()), "ci95": [float(low), float(high)], "p_value": float(p)}


def mean_interval(values) -> dict:
    """Mean and 95% Student-t interval over runs (seeds)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "ci95": [mean, mean], "n": int(len(values))}
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(len(values))}
