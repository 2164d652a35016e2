"""``fersynth evaluate``: every trained model on every test set (paper 001 Table 10's single- and
cross-dataset matrix), with per-class reports and confusion matrices, fairness on the evaluator (accuracy
per gender, age group and ethnicity, worst-best gap) and robustness under controlled lighting, resolution
and noise perturbations (paper 003).

Outputs under ``out_dir``: ``cross_dataset.json`` (+ ``cross_dataset.png`` heatmap), ``per_class/<model>/
<test>.json``, ``confusion/<model>/<test>.csv`` (rows ``actual,predicted`` for DVC's confusion template)
and ``.png``, ``fairness.json``, ``robustness.json``, and ``predictions/<model>/<test>.csv`` (key, label,
predicted) for paired comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fersynth.atomic import atomic_path, write_json
from fersynth.evaluate.metrics import classification_report, group_accuracy, normalised_confusion
from fersynth.labels import LABEL_SPACES
from fersynth.log import get_logger
from fersynth.paths import project_root
from fersynth.train.data import BatchLoader, decoded
from fersynth.train.train import load_trained
from fersynth.variant import Variant

log = get_logger(__name__)


@dataclass(frozen=True)
class RobustnessConfig:
    lighting: tuple[float, ...] = (0.5, 1.5)  # multiply pixel values
    resolution: tuple[int, ...] = (2, 4)  # downscale by this factor, then back up
    noise: tuple[float, ...] = (10.0, 25.0)  # Gaussian noise std on the 0-255 scale
    seed: int = 0


@dataclass(frozen=True)
class EvaluateConfig:
    """``params.yaml: evaluate``."""

    models: dict = field(default_factory=dict)  # name -> model directory (models/<experiment>)
    test_sets: dict = field(default_factory=dict)  # name -> variant directory (its test split is used)
    fairness_on: str = "evaluator"  # the test set whose demographic columns are used for fairness
    robustness_on: tuple[str, ...] = ()  # test sets perturbed for robustness
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)


def test_rows(variant_dir: Path, classes: tuple[str, ...]) -> pd.DataFrame | None:
    manifest = Variant(variant_dir).manifest
    rows = manifest[(manifest["split"] == "test") & manifest["label"].notna()]
    if rows.empty or LABEL_SPACES.get(rows["label_space"].iloc[0]) != classes:
        return None  # another label space (e.g. CASME II for a basic-7 model): not comparable
    return rows.sort_values("key")


@torch.no_grad()
def predict(model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    model.eval()
    return torch.cat([model(x).argmax(1) for x, _ in BatchLoader(images, labels, 256, shuffle=False)]).numpy()


def perturb(images: np.ndarray, kind: str, value: float, seed: int) -> np.ndarray:
    x = images.astype(np.float32)
    if kind == "lighting":
        x = x * value
    elif kind == "noise":
        x = x + np.random.default_rng(seed).normal(0, value, x.shape)
    elif kind == "resolution":
        tensor = torch.from_numpy(x)
        side = x.shape[-1]
        small = torch.nn.functional.interpolate(tensor, size=max(1, side // int(value)), mode="area")
        x = torch.nn.functional.interpolate(small, size=side, mode="bilinear", align_corners=False).numpy()
    else:
        raise ValueError(f"unknown perturbation {kind!r}")
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def evaluate(config: EvaluateConfig, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    cache = project_root() / ".cache" / "arrays"
    matrix: dict[str, dict[str, float | None]] = {}
    fairness: dict[str, dict] = {}
    robustness: dict[str, dict] = {}
    for model_name, model_dir in config.models.items():
        model, train_config, classes = load_trained(Path(model_dir))
        matrix[model_name] = {}
        for test_name, variant_dir in config.test_sets.items():
            rows = test_rows(Path(variant_dir), classes)
            if rows is None:
                matrix[model_name][test_name] = None
                continue
            images = decoded(Variant(Path(variant_dir)), rows, train_config.input, cache)
            labels = rows["label"].to_numpy(np.int64)
            predicted = predict(model, images, labels)
            report = classification_report(labels, predicted, classes)
            matrix[model_name][test_name] = round(report["accuracy"], 4)
            write_json(out_dir / "per_class" / model_name / f"{test_name}.json", report)
            _write_predictions(out_dir / "predictions" / model_name / f"{test_name}.csv", rows, predicted, classes)
            _write_confusion(out_dir / "confusion" / model_name, test_name, labels, predicted, classes)
            if test_name == config.fairness_on:
                fairness[model_name] = {
                    column: group_accuracy(labels, predicted, rows[column].fillna("unknown").to_numpy())
                    for column in ("gender", "age_group", "ethnicity")
                }
            if test_name in config.robustness_on:
                robustness.setdefault(model_name, {})[test_name] = _robustness(
                    model, images, labels, config.robustness, report["accuracy"]
                )
    write_json(out_dir / "cross_dataset.json", matrix)
    write_json(out_dir / "fairness.json", fairness)
    write_json(out_dir / "robustness.json", robustness)
    _heatmap(matrix, out_dir / "cross_dataset.png")
    log.info("evaluate: %s", matrix)
    return {"cross_dataset": matrix, "fairness": fairness, "robustness": robustness}


def _robustness(model, images, labels, config: RobustnessConfig, clean: float) -> dict:
    out = {"clean": round(clean, 4)}
    for kind, values in (("lighting", config.lighting), ("resolution", config.resolution), ("noise", config.noise)):
        for value in values:
            predicted = predict(model, perturb(images, kind, value, config.seed), labels)
            out[f"{kind}_{value:g}"] = round(float((predicted == labels).mean()), 4)
    return out


def _write_predictions(path: Path, rows: pd.DataFrame, predicted: np.ndarray, classes) -> None:
    frame = pd.DataFrame(
        {"key": rows["key"].to_numpy(), "label": rows["label"].to_numpy(np.int64), "predicted": predicted}
    )
    frame["correct"] = frame["label"] == frame["predicted"]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _write_confusion(directory: Path, name: str, labels, predicted, classes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_path(directory / f"{name}.csv") as tmp:
        pd.DataFrame({"actual": [classes[i] for i in labels], "predicted": [classes[i] for i in predicted]}).to_csv(
            tmp, index=False
        )
    matrix = normalised_confusion(labels, predicted, len(classes))
    fig, axis = plt.subplots(figsize=(5, 4.5))
    axis.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    axis.set_title(name)
    fig.tight_layout()
    with atomic_path(directory / f"{name}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def _heatmap(matrix: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(matrix)
    tests = sorted({t for row in matrix.values() for t in row})
    values = np.array([[np.nan if matrix[m].get(t) is None else matrix[m][t] for t in tests] for m in models])
    fig, axis = plt.subplots(figsize=(1.2 * len(tests) + 2, 0.6 * len(models) + 1.5))
    axis.imshow(values, vmin=0, vmax=1, cmap="viridis")
    axis.set_xticks(range(len(tests)), tests, rotation=30, ha="right")
    axis.set_yticks(range(len(models)), models)
    for i in range(len(models)):
        for j in range(len(tests)):
            if not np.isnan(values[i, j]):
                axis.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color="white", fontsize=8)
    axis.set_title("accuracy: trained on (rows) x tested on (columns)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
