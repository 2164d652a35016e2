"""Which trial of an experiment is *the* model: the one with the highest validation accuracy, the lowest seed
on a tie (never the test split). One rule for every consumer: ``fersynth train`` registers that trial in MLflow,
and ``fersynth predict`` / ``fersynth serve`` run it, read from the ``trials.json`` that training writes beside
the ``seed-<s>/`` directories (the directory alone then says which trial is best, with no MLflow store).

Light on imports on purpose (no torch, no MLflow): predict and tracking import it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from fersynth.paths import CheckpointLayout, trial_dirs, trial_name, trial_seed, trials_record_path
from fersynth.variants.files import MAX_JSON_BYTES, read_bounded

RULE = "highest validation accuracy; the lowest seed on a tie"
RECORDED = ("seed", "best_epoch", "best_val_accuracy")


def best_trial(trials: Sequence[dict]) -> dict:
    """The trial with the highest ``best_val_accuracy``, the lowest ``seed`` on a tie.

    >>> best_trial([{"seed": 0, "best_val_accuracy": 0.8}, {"seed": 1, "best_val_accuracy": 0.9},
    ...             {"seed": 2, "best_val_accuracy": 0.9}])["seed"]
    1
    """
    if not trials:
        raise ValueError("no trials to choose from")
    return max(trials, key=lambda t: (t["best_val_accuracy"], -t["seed"]))


def trials_record(trials: Sequence[dict]) -> dict:
    """What ``trials.json`` holds: the rule, the best seed, and each trial's seed, best epoch and validation
    accuracy (no clock, no test numbers: the same training writes the same bytes)."""
    return {
        "rule": RULE,
        "best_seed": best_trial(trials)["seed"],
        "trials": [{key: trial[key] for key in RECORDED} for trial in sorted(trials, key=lambda t: t["seed"])],
    }


def write_trials_record(model_dir: Path, trials: Sequence[dict]) -> None:
    trials_record_path(model_dir).write_text(json.dumps(trials_record(trials), indent=2, sort_keys=True) + "\n")


def best_trial_dir(model_dir: Path) -> Path:
    """The directory of the trial to use: ``model_dir`` itself when it holds one model (a single-trial
    experiment, or a ``seed-<s>/`` directory named on purpose), else its ``seed-<s>/`` chosen by
    :func:`best_trial` from ``trials.json``. A ``ValueError`` saying what to do when the record is missing
    or does not match the directories."""
    model_dir = Path(model_dir)
    if CheckpointLayout(model_dir).weights.exists():
        return model_dir
    on_disk = {trial_seed(d): d for d in trial_dirs(model_dir)}  # FileNotFoundError: no model at all
    record = trials_record_path(model_dir)
    example = model_dir / trial_name(min(on_disk))
    if not record.exists():
        raise ValueError(
            f"{model_dir} holds {len(on_disk)} trials but no {record.name} saying which is best (trained before "
            f"fersynth wrote one): retrain it, or name one trial, e.g. {example}"
        )
    try:
        trials = json.loads(read_bounded(record, MAX_JSON_BYTES))["trials"]  # FileRejected: a ValueError
        recorded = sorted(t["seed"] for t in trials)
        seed = best_trial(trials)["seed"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{record} is unreadable ({error}): retrain it, or name one trial, e.g. {example}") from None
    if recorded != sorted(on_disk):
        # another trial would not be the registry's: refuse rather than pick from what is left
        raise ValueError(
            f"{record} names seeds {recorded} but {model_dir} holds {sorted(on_disk)}: retrain it, or name one "
            f"trial, e.g. {example}"
        )
    return on_disk[seed]
