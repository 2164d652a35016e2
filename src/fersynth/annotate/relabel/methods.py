"""Two ways to find and fix wrong labels, both returning new labels and a confidence per image.

- ``self_filter`` (the data-centric paper behind paper 001): train, keep only the images the model
  predicts as labelled, retrain on those, for ``rounds`` rounds; the last round's models relabel everything.
- ``confident_learning``: K-fold out-of-fold probabilities, then cleanlab's label-issue detection;
  issues are relabelled to the predicted class (or dropped).

``consensus`` models decide together, so that a change does not hang on one model's seed (one model
changed 118 labels on one CPU and 192 on another, from the same data): ``self_filter``'s last round trains
that many models (seeds) and changes a label only where every one of them names the same other class;
``confident_learning`` averages the out-of-fold probabilities of that many K-fold splits (other folds,
other seeds) before cleanlab looks for issues.
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
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    rounds: int,
    config: ModelConfig,
    seed: int,
    consensus: int = 1,
) -> Relabelling:
    keep = np.ones(len(labels), dtype=bool)
    last_round = np.zeros(len(labels), dtype=int)
    votes: list[np.ndarray] = []
    for r in range(1, rounds + 1):
        members = consensus if r == rounds else 1
        trained = keep.copy()
        votes = [
            predict_proba(
                train_model(
                    images[trained], labels[trained], n_classes, config, seed + r + 1000 * k,
                    desc=f"self_filter round {r}" + (f" model {k + 1}/{members}" if members > 1 else ""),
                ),
                images,
            )
            for k in range(members)
        ]  # fmt: skip
        last_round[trained] = r
        keep = keep & (votes[0].argmax(1) == labels)
        if keep.sum() < n_classes * 2:  # nothing left to learn from: this round's model decides alone
            break
    return _unanimous(votes, labels, last_round)


def _unanimous(votes: list[np.ndarray], labels: np.ndarray, last_round: np.ndarray) -> Relabelling:
    """A label changes where every model names the same other class; the confidence is their mean probability."""
    predicted = np.stack([v.argmax(1) for v in votes])
    agreed = (predicted == predicted[0]).all(axis=0)
    new = np.where(agreed, predicted[0], labels)
    mean = np.mean(votes, axis=0)
    return Relabelling(new, mean[np.arange(len(new)), new], last_round)


def confident_learning(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    folds: int,
    config: ModelConfig,
    seed: int,
    action: str = "relabel",
    consensus: int = 1,
) -> Relabelling:
    from cleanlab.filter import find_label_issues

    probabilities = np.zeros((len(labels), n_classes), dtype=np.float32)
    counts = np.bincount(labels, minlength=n_classes)
    n_folds = int(max(2, min(folds, counts[counts > 0].min())))
    for repeat in range(consensus):
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed + 1000 * repeat)
        for fold, (train_index, held_index) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            model = train_model(
                images[train_index],
                labels[train_index],
                n_classes,
                config,
                seed + fold + 1000 * repeat,
                desc=f"confident_learning fold {fold + 1}/{n_folds}"
                + (f" split {repeat + 1}" if consensus > 1 else ""),
            )
            probabilities[held_index] += predict_proba(model, images[held_index]) / consensus
    issues = find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate")
    new = labels.copy()
    new[issues] = -1 if action == "drop" else probabilities[issues].argmax(1)
    confidence = probabilities[np.arange(len(labels)), np.where(new >= 0, new, labels)]
    return Relabelling(new, confidence, np.zeros(len(labels), dtype=int))
