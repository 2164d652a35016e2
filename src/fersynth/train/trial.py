"""One training trial (a seed): its set-up, its epochs, the checkpoint with the best validation accuracy and
its test predictions; and an experiment's trials side by side in worker processes.

Every trial on the CPU computes with ``runtime.trial_threads`` intra-op threads (:mod:`fersynth.runtime`),
whether it runs alone, beside others or in a ``torchrun`` team: its bytes depend on that number only, not on
how many cores the machine has.
On 2 cores two one-thread trials side by side trained the demo's CNN 1.37x faster than one two-thread trial
after another (small convolutions leave a second thread idle much of the time). Workers are forked before
any PyTorch work in the parent and do no MLflow logging (the parent logs every trial afterwards), so no
thread pool or database connection crosses a fork. Under ``torchrun`` or on a GPU, trials run one after
another in the processes of the team.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fersynth.log import get_logger, progress
from fersynth.modeling.architectures import build_model, channels_last
from fersynth.modeling.checkpoint import save_checkpoint
from fersynth.modeling.data import PRESETS, BatchLoader
from fersynth.modeling.metrics import classification_report
from fersynth.modeling.process_group import Distributed
from fersynth.runtime import pinned, torch_threads, usable_cpus
from fersynth.train.data_parallel import all_sum, sync_buffers, train_step, wrap
from fersynth.variants.files import MAX_WEIGHTS_BYTES, check_input

log = get_logger(__name__)


def fit_trials(config, data: dict, classes, state: Distributed, outs: dict[int, Path], names: dict[int, str]) -> list:
    """Every seed of ``outs`` trained and saved to its directory; their results in seed order."""
    seeds = list(outs)
    cpu = state.device.startswith("cpu")
    threads = pinned().trial_threads if cpu else 0  # 0: a GPU's host threads are left alone
    workers = min(len(seeds), max(1, usable_cpus() // max(threads, 1)))
    if state.world_size > 1 or not cpu or workers == 1:
        with torch_threads(threads):
            return [fit_trial(config, s, data, classes, state, outs[s], names[s]) for s in seeds]
    log.info("train: %d trials, %d side by side with %d thread(s) each", len(seeds), workers, threads)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(fit_trial, config, s, data, classes, state, outs[s], names[s]) for s in seeds]
        return [future.result() for future in futures]


def fit_trial(config, seed: int, data: dict, classes, state: Distributed, out: Path, name: str) -> dict:
    """Train one seed; save its best checkpoint to ``out``. Returns its metrics, learning curve, per-epoch
    speed (for MLflow only), test predictions and an input example for its MLflow model."""
    device = state.device
    torch.manual_seed(seed)
    loaders = {
        "train": BatchLoader(*data["train"], config.batch_size, device, True, PRESETS[config.augment], seed),
        "val": BatchLoader(*data["val"], 256, device, shuffle=False),
        "test": BatchLoader(*data["test"], 256, device, shuffle=False),
    }
    if config.weights:  # local ImageNet weights, loaded by path in build_model (which cannot import fersynth)
        check_input(Path(config.weights), MAX_WEIGHTS_BYTES, "train weights")
    model = build_model(
        config.architecture, len(classes), config.input.channels, config.input.size, config.weights, config.width
    )
    frozen = model.freeze(config.freeze) if config.freeze else 0
    model = channels_last(model, device)
    trained = wrap(model, state)  # the DDP wrapper under torchrun, else the model itself
    epochs = config.epochs_for(len(loaders["train"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser, scheduler = optimisation(config, trainable, len(loaders["train"]), epochs)
    best = {"val_accuracy": -1.0, "val_loss": float("inf"), "epoch": 0, "state": None}
    history, speeds, step = [], [], 0
    for epoch in progress(range(1, epochs + 1), desc=f"train {name}", unit="epoch"):
        started = time.perf_counter()
        loss, seen, step = _epoch(config, trained, loaders["train"], optimiser, scheduler, state, seed, step)
        sync_buffers(model, state)
        val_loss, val_accuracy, _ = evaluate(model, loaders["val"], device)
        if config.schedule == "plateau":
            scheduler.step(val_loss)
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(loss, 5),
                "val_loss": round(val_loss, 5),
                "val_accuracy": round(val_accuracy, 5),
                "lr": round(optimiser.param_groups[0]["lr"], 8),
            }
        )
        speeds.append(round(seen / (time.perf_counter() - started), 1))
        # the checkpoint: the best validation accuracy; on a tie (val accuracy moves in steps of 1/len(val)) the
        # lower validation loss, so a plateau keeps its later, more converged epoch
        if (val_accuracy, -val_loss) > (best["val_accuracy"], -best["val_loss"]):
            best = {"val_accuracy": val_accuracy, "val_loss": val_loss, "epoch": epoch, "state": _copy_state(model)}
        elif config.early_stopping and epoch - best["epoch"] >= config.early_stopping:
            log.info("train %s: early stop at epoch %d (best %d)", name, epoch, best["epoch"])
            break
    model.load_state_dict(best["state"])
    test_loss, test_accuracy, predicted = evaluate(model, loaders["test"], device)
    report = classification_report(data["test"][1], predicted, classes)
    save_checkpoint(out, model, asdict(config) | {"classes": list(classes)})
    log.info("train %s: best val %.3f (epoch %d), test %.3f", name, best["val_accuracy"], best["epoch"], test_accuracy)
    return {
        "seed": seed,
        "best_epoch": best["epoch"],
        "best_val_accuracy": round(best["val_accuracy"], 4),
        "test_accuracy": round(test_accuracy, 4),
        "test_macro_f1": round(report["macro avg"]["f1"], 4),
        "test_loss": round(test_loss, 4),
        "history": history,
        "images_per_second": speeds,
        "frozen_layers": frozen,
        "predicted": predicted,
        "example": _example(data),
    }


def _epoch(config, trained, loader, optimiser, scheduler, state, seed: int, step: int) -> tuple[float, int, int]:
    """One pass over the train batches: (mean train loss, images seen over the team, the next step number)."""
    trained.train()
    shards = state.world_size * config.accumulate
    autocast = state.device.startswith("cuda") and config.mixed_precision
    total, seen = 0.0, 0
    for x, y in loader:
        if shards > 1 and len(y) < 2 * shards:
            continue  # a last batch too small to give every shard two images (BatchNorm needs them)
        optimiser.zero_grad(set_to_none=True)
        batch_loss, batch_seen = train_step(
            trained, x, y, state, config.accumulate, seed, step, autocast, config.label_smoothing
        )
        optimiser.step()
        if config.schedule != "plateau":
            scheduler.step()
        step += 1
        total, seen = total + batch_loss, seen + batch_seen
    total, seen = all_sum([total, seen], state)
    return total / max(seen, 1), int(seen), step


def optimisation(config, parameters: list, steps_per_epoch: int, epochs: int):
    """The optimiser and learning-rate schedule of ``config`` over ``epochs``. ``plateau`` steps once per epoch
    on the validation loss; ``one_cycle`` and ``cosine`` step after every batch."""
    lr, decay = config.learning_rate, config.weight_decay
    if config.optimizer == "adam":
        optimiser = torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    elif config.optimizer == "adamw":
        optimiser = torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    else:
        optimiser = torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=decay)
    total = max(steps_per_epoch, 1) * epochs
    if config.schedule == "one_cycle":
        return optimiser, torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=lr, total_steps=total, pct_start=config.warmup
        )
    if config.schedule == "cosine":
        return optimiser, torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total)
    return optimiser, torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
    )


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


def _example(data: dict) -> np.ndarray:
    """Two of the trial's own val images (train when val is empty): the MLflow model's input example."""
    images = data["val"][0] if len(data["val"][0]) else data["train"][0]
    return np.ascontiguousarray(images[:2])


def _copy_state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
