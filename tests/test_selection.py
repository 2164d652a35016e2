"""Which trial is the model: the rule MLflow registers by is the one `fersynth predict` reads from trials.json."""

from __future__ import annotations

import json

import pytest

from fersynth.paths import trials_record_path
from fersynth.train import mlflow_model
from fersynth.train.selection import best_trial, best_trial_dir, write_trials_record


def _experiment(root, accuracies: dict[int, float]):
    """A model directory with one (empty) trial per seed and the record training writes."""
    for seed in accuracies:
        (root / f"seed-{seed}").mkdir(parents=True)
        (root / f"seed-{seed}" / "model.safetensors").write_bytes(b"")
    trials = [
        {"seed": s, "best_epoch": 3, "best_val_accuracy": a, "test_accuracy": 1 - a} for s, a in accuracies.items()
    ]
    write_trials_record(root, trials)
    return trials


def test_the_best_trial_is_the_highest_validation_accuracy_lowest_seed_on_a_tie(tmp_path):
    trials = _experiment(tmp_path / "model", {4: 0.80, 5: 0.86, 6: 0.86, 7: 0.70})
    assert best_trial(trials)["seed"] == 5 and mlflow_model.best_trial is best_trial  # the registry's rule
    assert best_trial_dir(tmp_path / "model") == tmp_path / "model" / "seed-5"  # not the first trial, seed-4
    record = json.loads(trials_record_path(tmp_path / "model").read_text())
    assert record["best_seed"] == 5 and "test_accuracy" not in record["trials"][0]  # chosen without the test split
    # a trial named on purpose, and a single-trial model, are used as they are
    assert best_trial_dir(tmp_path / "model" / "seed-7") == tmp_path / "model" / "seed-7"
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "model.safetensors").write_bytes(b"")
    assert best_trial_dir(tmp_path / "single") == tmp_path / "single"


def test_without_a_matching_record_no_trial_is_guessed(tmp_path):
    _experiment(tmp_path / "model", {0: 0.5, 1: 0.9})
    (tmp_path / "model" / "seed-1" / "model.safetensors").unlink()  # the best trial's weights are gone
    with pytest.raises(ValueError, match=r"names seeds \[0, 1\] but .* holds \[0\]"):
        best_trial_dir(tmp_path / "model")
    (tmp_path / "model" / "seed-1" / "model.safetensors").write_bytes(b"")
    trials_record_path(tmp_path / "model").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        best_trial_dir(tmp_path / "model")
    trials_record_path(tmp_path / "model").unlink()  # trained before fersynth wrote the record
    with pytest.raises(ValueError, match=r"holds 2 trials but no trials.json .* e.g. .*seed-0"):
        best_trial_dir(tmp_path / "model")
