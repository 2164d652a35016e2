"""``fersynth train``: one classifier on one or more variants' train rows, logged to MLflow.

Paper 001's recipe is the default: its custom CNN at 48x48 grey, batch 64, Adam, ReduceLROnPlateau on
the validation loss (factor 0.1, patience 2, min LR 1e-5), the checkpoint with the best validation
accuracy, validation = 20% of train, horizontal flips. Which rows fit, validate and test is
:mod:`fersynth.train.rows` (by subject where rows have subjects; synthetic rows only ever train).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from fersynth.atomic import atomic_path, write_json
from fersynth.log import get_logger
from fersynth.modeling.data import decoded
from fersynth.modeling.floor import fit_floor
from fersynth.modeling.metrics import mean_interval
from fersynth.modeling.process_group import Distributed, setup, teardown
from fersynth.paths import CheckpointLayout, floor_path, trial_name
from fersynth.tracking import start_run, variant_hash
from fersynth.train.card import write_model_card
from fersynth.train.mlflow_model import is_current, log_trial_model, register_best
from fersynth.train.recipe import TrainConfig
from fersynth.train.rows import training_rows
from fersynth.train.selection import best_trial, write_trials_record
from fersynth.train.trial import fit_trials
from fersynth.variants.variant import Variant

log = get_logger(__name__)


def arrays(rows: pd.DataFrame, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of ``rows``, decoded once per variant into the array cache."""
    groups = list(rows.groupby("variant", sort=False))
    parts = [decoded(Variant(Path(v)), group, config.input) for v, group in groups]
    labels = np.concatenate([group["label"].to_numpy(np.int64) for _, group in groups])
    return np.concatenate(parts) if len(parts) > 1 else parts[0], labels


def train(
    config: TrainConfig,
    model_dir: Path,
    metrics_path: Path | None = None,
    run_name: str = "train",
    history_path: Path | None = None,
) -> dict:
    """Train ``config.trials`` models (one MLflow run each) on the same rows; save them under ``model_dir``
    (``model_dir/seed-<s>/`` when there are several trials) and write the metrics: per trial, and their
    mean with a 95% interval. ``history_path`` gets the first trial's learning curve as CSV (a DVC plot)."""
    state = setup(config.device)
    selected = training_rows(config)
    rows, classes = selected.splits, selected.classes
    data = {split: arrays(r, config) for split, r in rows.items()}
    counts = {s: len(r) for s, r in rows.items()} | {"synthetic_train": int(rows["train"]["synthetic"].sum())}
    if config.label_noise:
        images, labels = data["train"]
        data["train"] = (images, flip_labels(labels, config.label_noise, len(classes), config.data_seed))
        counts["flipped_train"] = int((data["train"][1] != labels).sum())
    log.info(
        "train %s: %s on %s x %d process(es), %s, validation %s, seeds %s",
        run_name,
        config.architecture,
        state.device,
        state.world_size,
        counts,
        selected.validation,
        config.seeds,
    )
    # only rank 0 writes; the other processes train the same models in step and throw theirs away
    with atomic_path(Path(model_dir), kind="model") if state.main else tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        outs = {seed: tmp if config.trials == 1 else tmp / trial_name(seed) for seed in config.seeds}
        names = {seed: run_name if config.trials == 1 else f"{run_name}/{trial_name(seed)}" for seed in config.seeds}
        trials = fit_trials(config, data, classes, state, outs, names)
        metrics = _summarise(trials, classes, counts, selected.validation, config) if state.main else {}
        if state.main:
            best = best_trial(trials)
            # one parent run per training: its trials' runs nest under it, and it carries the seed summary
            with start_run(
                "train",
                _inputs(config),
                params=_flat(asdict(config)),
                run_name=run_name,
                tags={"fersynth.experiment": run_name},
            ):
                for trial in trials:
                    with_model = config.log_models == "all" or trial is best
                    out = outs[trial["seed"]]
                    trial |= _log_trial(config, trial, data, counts, classes, state, out, run_name, with_model)
                metrics["floor"] = _fit_floor(data, len(classes), floor_path(tmp))
                write_trials_record(tmp, trials)  # predict and serve run the trial registered below
                hashes = {path: variant_hash(Path(path)) for path in config.variants}
                card = write_model_card(tmp, run_name, config, metrics, hashes)
                weights = CheckpointLayout(outs[best["seed"]]).weights
                registered = register_best(run_name, trials, card, weights, champion=is_current(model_dir))
                _log_confusion_figure(best, data, classes, run_name)
                _log_seed_summary(metrics, registered, tmp)
            log.info(
                "train %s: MLflow model %s version %s (seed %d)",
                run_name,
                registered["name"],
                registered["version"],
                registered["seed"],
            )
    teardown(state)
    if not state.main:
        return {}
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    if history_path is not None:
        with atomic_path(Path(history_path)) as tmp:
            pd.DataFrame(trials[0]["history"]).to_csv(tmp, index=False)
    log.info(
        "train %s: test accuracy %.3f %s over %d trial(s)",
        run_name,
        metrics["test_accuracy"],
        metrics["test_accuracy_ci95"],
        config.trials,
    )
    return metrics


def _summarise(trials: list[dict], classes, counts: dict, validation: dict, config: TrainConfig) -> dict:
    """The experiment's metrics: per trial, and their mean with a 95% interval over seeds."""
    summary = {
        key: mean_interval([t[key] for t in trials]) for key in ("best_val_accuracy", "test_accuracy", "test_macro_f1")
    }
    return {
        "classes": list(classes),
        "rows": counts,
        "validation": validation,
        "seeds": list(config.seeds),
        "best_val_accuracy": round(summary["best_val_accuracy"]["mean"], 4),
        "test_accuracy": round(summary["test_accuracy"]["mean"], 4),
        "test_accuracy_ci95": [round(v, 4) for v in summary["test_accuracy"]["ci95"]],
        "test_macro_f1": round(summary["test_macro_f1"]["mean"], 4),
        "trials": [{k: v for k, v in t.items() if k not in UNVERSIONED} for t in trials],
        "history": trials[0]["history"],
    }


def _inputs(config: TrainConfig) -> dict[str, Path]:
    return {Path(v).name: Path(v) for v in config.variants}


def _log_trial(
    config: TrainConfig,
    trial: dict,
    data,
    counts: dict,
    classes,
    state: Distributed,
    out: Path,
    experiment: str,
    with_model: bool = True,
) -> dict:
    """One MLflow run for a trained trial, nested under its training's parent run: params, its learning curve
    and speed per epoch, test metrics and confusion counts, and (``with_model``) the model. Returns its run id
    and model URI (``None`` without)."""
    import mlflow
    from mlflow.entities import Metric
    from sklearn.metrics import confusion_matrix

    seed = trial["seed"]
    params = _flat(asdict(config)) | {"trial_seed": seed, "frozen_layers": trial["frozen_layers"]}
    tags = {"fersynth.experiment": experiment, "fersynth.trial_seed": str(seed)}
    name = f"{experiment}/{trial_name(seed)}"
    with start_run("train", _inputs(config), params=params, run_name=name, tags=tags, nested=True) as run:
        mlflow.log_params({f"rows_{k}": v for k, v in counts.items()} | {"processes": state.world_size})
        # the learning curve in one write (a call per epoch cost ~15 ms each); the speed goes to MLflow only:
        # a timing in a DVC-tracked file differs every run
        now = int(time.time() * 1000)
        curve = [
            Metric(key, float(value), now, record["epoch"])
            for record, speed in zip(trial["history"], trial["images_per_second"], strict=True)
            for key, value in ({k: v for k, v in record.items() if k != "epoch"} | {"images_per_second": speed}).items()
        ]
        final = [Metric(k, float(trial[k]), now, 0) for k in ("best_val_accuracy", "test_accuracy", "test_macro_f1")]
        _log_metrics(run.info.run_id, curve + final)
        # every trial's test confusion as counts; the registered trial also gets the figure (train())
        confusion = confusion_matrix(data["test"][1], trial["predicted"], labels=list(range(len(classes))))
        mlflow.log_dict({"classes": list(classes), "true_x_predicted": confusion.tolist()}, "confusion_test.json")
        model_uri = log_trial_model(out, trial["example"], classes) if with_model else None
    return {"model_uri": model_uri, "run_id": run.info.run_id}


def _log_metrics(run_id: str, metrics: list) -> None:
    import mlflow

    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def _log_seed_summary(metrics: dict, registered: dict, model_dir: Path) -> None:
    """The active (parent) run's summary over seeds: the mean metrics with the test interval and seed sd, the
    registered version, the model card and the metrics as train writes them."""
    import mlflow

    accuracies = [t["test_accuracy"] for t in metrics["trials"]]
    low, high = metrics["test_accuracy_ci95"]
    mlflow.log_metrics(
        {
            "best_val_accuracy": metrics["best_val_accuracy"],
            "test_accuracy": metrics["test_accuracy"],
            "test_accuracy_ci95_low": low,
            "test_accuracy_ci95_high": high,
            "test_accuracy_seed_sd": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
            "test_macro_f1": metrics["test_macro_f1"],
            "trials": len(accuracies),
        }
    )
    mlflow.set_tags(
        {
            "fersynth.seeds": ",".join(str(s) for s in metrics["seeds"]),
            "fersynth.registered": f"{registered['name']}/{registered['version']}",
            "fersynth.registered_seed": str(registered["seed"]),
        }
    )
    mlflow.log_artifact(str(Path(model_dir) / "MODEL_CARD.md"))
    mlflow.log_dict({k: v for k, v in metrics.items() if k != "history"}, "seed_summary.json")


def flip_labels(labels: np.ndarray, share: float, n_classes: int, seed: int) -> np.ndarray:
    """A planted harm: ``round(share x N)`` labels, chosen with ``seed``, each moved to another class (uniformly
    among the other ``n_classes - 1``); the same rows for every trial of an experiment.

    >>> flip = flip_labels(np.zeros(10, dtype=np.int64), 0.3, 7, 0)
    >>> int((flip != 0).sum())
    3
    """
    rng = np.random.default_rng([seed, 20261206])
    flipped = np.array(labels, copy=True)
    chosen = rng.choice(len(labels), size=int(round(share * len(labels))), replace=False)
    flipped[chosen] = (flipped[chosen] + rng.integers(1, n_classes, size=len(chosen))) % n_classes
    return flipped


# what a trial returns besides its metrics: kept out of metrics/train/*.json (run ids change every run)
UNVERSIONED = (
    "history",
    "images_per_second",
    "frozen_layers",
    "model_uri",
    "run_id",
    "predicted",
    "example",
)


def _fit_floor(data: dict, n_classes: int, path: Path) -> dict:
    """The experiment's HOG + logistic-regression floor on its own train rows (saved for ``evaluate``)."""
    if len(np.unique(data["train"][1])) < 2:
        return {"fitted": False, "why": "fewer than 2 classes in train"}
    floor = fit_floor(data["train"], data["val"], n_classes)
    floor.save(path)
    test_images, test_labels = data["test"]
    accuracy = float(np.mean(floor.predict(test_images) == test_labels)) if len(test_labels) else None
    log.info("train: HOG + logistic-regression floor: val %.3f, test %s", floor.val_accuracy, accuracy)
    return {
        "fitted": True,
        "c": floor.c,
        "val_accuracy": round(floor.val_accuracy, 4),
        "test_accuracy": None if accuracy is None else round(accuracy, 4),
    }


def _log_confusion_figure(trial: dict, data: dict, classes, experiment: str) -> None:
    """The registered trial's test confusion matrix as a figure in its MLflow run (one per experiment: a
    figure costs ~0.15 s, and every trial logs its counts anyway)."""
    import mlflow

    from fersynth.modeling.plots import close, confusion_figure

    # through the client: the finished run keeps its status and end time (start_run(run_id) would reopen it)
    figure = confusion_figure(data["test"][1], trial["predicted"], classes, f"{experiment}/seed-{trial['seed']}")
    mlflow.MlflowClient().log_figure(trial["run_id"], figure, "confusion_test.png")
    close(figure)


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
