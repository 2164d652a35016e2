"""Two ways to find and fix wrong labels, both returning new labels and a confidence per image.

- ``self_filter`` (the data-centric paper behind paper 001): train, keep only the images the model
  predicts as labelled, retrain on those, for ``rounds`` rounds; the last model relabels everything.
- ``confident_learning``: K-fold out-of-fold probabilities, then cleanlab's label-issue detection;
  issues are relabelled to the predicted class (or dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from fersynth.modeling.small_cnn import ModelConfig, predict_proba, train_model


@dataclass
class Relabelling:
    new_labels: np.ndarray  # -1 = drop
    confidence: np.ndarray  # probability the final model gives the new label
    round: np.ndarray  # self_filter: the last round whose training set held the image (0 = never left it)


def self_filter(
    images: np.ndarray, labels: np.ndarray, n_classes: int, rounds: int, config: ModelConfig, seed: int
) -> Relabelling:
    keep = np.ones(len(labels), dtype=bool)
    last_round = np.zeros(len(labels), dtype=int)
    model = None
    for r in range(1, rounds + 1):
        model = train_model(images[keep], labels[keep], n_classes, config, seed + r, desc=f"self_filter round {r}")
        predicted = predict_proba(model, images).argmax(1)
        last_round[keep] = r
        keep = keep & (predicted == labels)
        if keep.sum() < n_classes * 2:  # nothing left to learn from
            break
    probabilities = predict_proba(model, images)
    new = probabilities.argmax(1)
    return Relabelling(new, probabilities[np.arange(len(new)), new], last_round)


def confident_learning(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    folds: int,
    config: ModelConfig,
    seed: int,
    action: str = "relabel",
) -> Relabelling:
    from cleanlab.filter import find_label_issues

    probabilities = np.zeros((len(labels), n_classes), dtype=np.float32)
    counts = np.bincount(labels, minlength=n_classes)
    n_folds = int(max(2, min(folds, counts[counts > 0].min())))
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (train_index, held_index) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        model = train_model(
            images[train_index],
            labels[train_index],
            n_classes,
            config,
            seed + fold,
            desc=f"confident_learning fold {fold + 1}/{n_folds}",
        )
        probabilities[held_index] = predict_proba(model, images[held_index])
    issues = find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate")
    new = labels.copy()
    new[issues] = -1 if action == "drop" else probabilities[issues].argmax(1)
    confidence = probabilities[np.arange(len(labels)), np.where(new >= 0, new, labels)]
    return Relabelling(new, confidence, np.zeros(len(labels), dtype=int))
