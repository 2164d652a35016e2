"""``fersynth train``: one classifier on one or more variants' train rows, logged to MLflow.

Paper 001's recipe is the default: its custom CNN at 48x48 grey, batch 64, Adam, ReduceLROnPlateau on
the validation loss (factor 0.1, patience 2, min LR 1e-5), the checkpoint with the best validation
accuracy, validation = 20% of train, horizontal flips. Which rows fit, validate and test is
:mod:`fersynth.train.rows` (by subject where rows have subjects; synthetic rows only ever train).
"""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fersynth.atomic import atomic_path, write_json
from fersynth.distributed import Distributed, setup, teardown
from fersynth.log import get_logger, progress
from fersynth.modeling.architectures import build_model, channels_last
from fersynth.modeling.checkpoint import save_checkpoint
from fersynth.modeling.data import PRESETS, BatchLoader, InputConfig, decoded
from fersynth.modeling.metrics import classification_report, mean_interval
from fersynth.paths import trial_name
from fersynth.tracking import variant_hash
from fersynth.train.card import write_model_card
from fersynth.train.distributed import all_sum, sync_buffers, train_step, wrap
from fersynth.train.mlflow_model import log_trial_model, register_best
from fersynth.train.rows import training_rows
from fersynth.variant import Variant

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """``params.yaml: train.<experiment>``."""

    variants: tuple[str, ...] = ("data/original/fer2013",)  # their train rows are concatenated
    synthetic_per_class: int = -1  # cap on synthetic train rows per class (-1: all of them)
    synthetic_ratio: float = -1.0  # cap per class at this many synthetic rows per real train row (-1: none)
    architecture: str = "paper001_cnn"
    width: float = 1.0  # paper001_cnn's filters x width (1.0: the paper's; the CPU demo: 0.25)
    weights: str = ""  # local ImageNet weights for torchvision backbones
    freeze: float = 0.0  # fraction of the backbone's learnable layers frozen (paper 002: 0.3)
    input: InputConfig = field(default_factory=InputConfig)
    augment: str = "paper001"  # a preset of fersynth.modeling.data.PRESETS
    optimizer: str = "adam"  # adam | sgd
    learning_rate: float = 0.01  # paper 001: 0.01 FER2013, 3e-4 AffectNet / merged
    lr_factor: float = 0.1
    lr_patience: int = 2
    min_lr: float = 1e-5
    early_stopping: int = 0  # epochs without a better val accuracy before stopping (0: never)
    epochs: int = 50
    batch_size: int = 64
    validation_fraction: float = 0.2  # of the real train rows (paper 001: 20% of train), by subject where known
    seed: int = 0  # the validation split's seed, and the first trial's
    trials: int = 1  # models trained with seeds seed, seed+1, ... on the same split (paper 002: 5)
    accumulate: int = 1  # micro-batches per optimiser step and process (fersynth.train.distributed)
    device: str = "auto"
    mixed_precision: bool = True  # bfloat16 autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        if self.augment not in PRESETS:
            raise ValueError(f"train.augment must be one of {sorted(PRESETS)}, not {self.augment!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"train.optimizer must be adam or sgd, not {self.optimizer!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"train.validation_fraction must be within (0, 1), not {self.validation_fraction}")
        if self.trials < 1 or self.accumulate < 1:
            raise ValueError(f"train.trials and train.accumulate must be at least 1: {self.trials}, {self.accumulate}")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.trials))


def arrays(rows: pd.DataFrame, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of ``rows``, decoded once per variant into the array cache."""
    groups = list(rows.groupby("variant", sort=False))
    parts = [decoded(Variant(Path(v)), group, config.input) for v, group in groups]
    labels = np.concatenate([group["label"].to_numpy(np.int64) for _, group in groups])
    return np.concatenate(parts) if len(parts) > 1 else parts[0], labels


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, device: str) -> tuple[float, float, np.ndarray]:
    """(mean loss, accuracy, predictions in loader order)."""
    model.eval()
    losses, predictions, labels = [], [], []
    for x, y in loader:
        logits = model(x)
        losses.append(nn.functional.cross_entropy(logits.float(), y, reduction="sum").item())
        predictions.append(logits.argmax(1).cpu())
        labels.append(y.cpu())
    predicted, truth = torch.cat(predictions).numpy(), torch.cat(labels).numpy()
    return sum(losses) / max(len(truth), 1), float((predicted == truth).mean()) if len(truth) else 0.0, predicted


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
        trials = []
        for seed in config.seeds:
            name = run_name if config.trials == 1 else f"{run_name}/{trial_name(seed)}"
            out = tmp if config.trials == 1 else tmp / trial_name(seed)
            trials.append(_train_trial(config, seed, data, counts, classes, state, out, name, run_name))
        metrics = _summarise(trials, classes, counts, selected.validation, config) if state.main else {}
        if state.main:
            hashes = {path: variant_hash(Path(path)) for path in config.variants}
            write_model_card(tmp, run_name, config, metrics, hashes)
            registered = register_best(run_name, trials)
            _log_confusion_figure(next(t for t in trials if t["seed"] == registered["seed"]), data, classes, run_name)
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


def _train_trial(
    config: TrainConfig,
    seed: int,
    data: dict,
    counts: dict,
    classes,
    state: Distributed,
    out: Path,
    run_name: str,
    experiment: str,
) -> dict:
    import mlflow
    from sklearn.metrics import confusion_matrix

    from fersynth.tracking import start_run

    device = state.device
    torch.manual_seed(seed)
    loaders = {
        "train": BatchLoader(*data["train"], config.batch_size, device, True, PRESETS[config.augment], seed),
        "val": BatchLoader(*data["val"], 256, device, shuffle=False),
        "test": BatchLoader(*data["test"], 256, device, shuffle=False),
    }
    model = build_model(
        config.architecture, len(classes), config.input.channels, config.input.size, config.weights, config.width
    )
    frozen = model.freeze(config.freeze) if config.freeze else 0
    model = channels_last(model, device)
    trained = wrap(model, state)  # the DDP wrapper under torchrun, else the model itself
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = (
        torch.optim.Adam(trainable, lr=config.learning_rate)
        if config.optimizer == "adam"
        else torch.optim.SGD(trainable, lr=config.learning_rate, momentum=0.9)
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
    )
    autocast = device.startswith("cuda") and config.mixed_precision
    best = {"val_accuracy": -1.0, "epoch": 0, "state": None}
    history = []
    inputs = {Path(v).name: Path(v) for v in config.variants}
    params = _flat(asdict(config)) | {"trial_seed": seed, "frozen_layers": frozen}
    shards = state.world_size * config.accumulate
    tags = {"fersynth.experiment": experiment, "fersynth.trial_seed": str(seed)}
    tracked = start_run("train", inputs, params=params, run_name=run_name, tags=tags) if state.main else nullcontext()
    with tracked as run:
        if state.main:
            mlflow.log_params({f"rows_{k}": v for k, v in counts.items()} | {"processes": state.world_size})
        step = 0
        for epoch in progress(range(1, config.epochs + 1), desc=f"train {run_name}", unit="epoch"):
            model.train()
            started, total, seen = time.perf_counter(), 0.0, 0
            for x, y in loaders["train"]:
                if shards > 1 and len(y) < 2 * shards:
                    continue  # a last batch too small to give every shard two images (BatchNorm needs them)
                optimiser.zero_grad(set_to_none=True)
                batch_loss, batch_seen = train_step(trained, x, y, state, config.accumulate, seed, step, autocast)
                optimiser.step()
                step += 1
                total, seen = total + batch_loss, seen + batch_seen
            total, seen = all_sum([total, seen], state)
            sync_buffers(model, state)
            val_loss, val_accuracy, _ = evaluate(model, loaders["val"], device)
            scheduler.step(val_loss)
            record = {
                "epoch": epoch,
                "train_loss": round(total / max(seen, 1), 5),
                "val_loss": round(val_loss, 5),
                "val_accuracy": round(val_accuracy, 5),
                "lr": optimiser.param_groups[0]["lr"],
                "images_per_second": round(seen / (time.perf_counter() - started), 1),
            }
            history.append(record)
            if state.main:
                mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
            if val_accuracy > best["val_accuracy"]:
                best = {"val_accuracy": val_accuracy, "epoch": epoch, "state": _copy_state(model)}
            elif config.early_stopping and epoch - best["epoch"] >= config.early_stopping:
                log.info("train %s: early stop at epoch %d (best %d)", run_name, epoch, best["epoch"])
                break
        model.load_state_dict(best["state"])
        test_loss, test_accuracy, predicted = evaluate(model, loaders["test"], device)
        report = classification_report(data["test"][1], predicted, classes)
        save_checkpoint(out, model, asdict(config) | {"classes": list(classes)})
        if state.main:
            mlflow.log_metrics(
                {
                    "best_val_accuracy": best["val_accuracy"],
                    "test_accuracy": test_accuracy,
                    "test_macro_f1": report["macro avg"]["f1"],
                }
            )
            # every trial's test confusion as counts; the registered trial also gets the figure (train())
            counts = confusion_matrix(data["test"][1], predicted, labels=list(range(len(classes))))
            mlflow.log_dict({"classes": list(classes), "true_x_predicted": counts.tolist()}, "confusion_test.json")
            model_uri = log_trial_model(out, *_example(model, data, device), classes)
    log.info(
        "train %s: best val %.3f (epoch %d), test %.3f", run_name, best["val_accuracy"], best["epoch"], test_accuracy
    )
    return {
        "seed": seed,
        "best_epoch": best["epoch"],
        "best_val_accuracy": round(best["val_accuracy"], 4),
        "test_accuracy": round(test_accuracy, 4),
        "test_macro_f1": round(report["macro avg"]["f1"], 4),
        "test_loss": round(test_loss, 4),
        "history": history,
    } | ({"model_uri": model_uri, "run_id": run.info.run_id, "predicted": predicted} if state.main else {})


# what a trial returns besides its metrics: kept out of metrics/train/*.json (run ids change every run)
UNVERSIONED = ("history", "model_uri", "run_id", "predicted")


def _log_confusion_figure(trial: dict, data: dict, classes, experiment: str) -> None:
    """The registered trial's test confusion matrix as a figure in its MLflow run (one per experiment: a
    figure costs ~0.15 s, and every trial logs its counts anyway)."""
    import mlflow

    from fersynth.modeling.plots import close, confusion_figure

    # through the client: the finished run keeps its status and end time (start_run(run_id) would reopen it)
    figure = confusion_figure(data["test"][1], trial["predicted"], classes, f"{experiment}/seed-{trial['seed']}")
    mlflow.MlflowClient().log_figure(trial["run_id"], figure, "confusion_test.png")
    close(figure)


@torch.no_grad()
def _example(model: nn.Module, data: dict, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Two of the trial's own val images (train when val is empty) and its probabilities for them: the MLflow
    model's input example and signature."""
    images = data["val"][0] if len(data["val"][0]) else data["train"][0]
    example = np.ascontiguousarray(images[:2])
    model.eval()
    logits = model(torch.from_numpy(example.astype(np.float32) / 255.0).to(device))
    return example, torch.softmax(logits.float(), 1).cpu().numpy()


def _copy_state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
