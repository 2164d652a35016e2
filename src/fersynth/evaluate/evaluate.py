"""``fersynth evaluate``: every trained model on every test set (paper 001 Table 10's single- and
cross-dataset matrix), with per-class reports and confusion matrices, fairness on the balanced set (accuracy
per gender, age group and ethnicity, worst-best gap) and robustness under controlled lighting, resolution
and noise perturbations (paper 003).

Outputs under ``out_dir`` (:class:`fersynth.paths.EvaluateLayout`): ``cross_dataset.json`` (+ ``.png``
heatmap), ``per_class/<model>/<test>.json``, ``confusion/<model>/<test>.csv`` (rows ``actual,predicted`` for
DVC's confusion template) and ``.png``, ``fairness.json``, ``robustness.json``, ``floor.json``,
``one_class.json`` (the cells where a model answers one class whatever the face, or no better than always
naming the most frequent class) and ``predictions/<model>/<test>.csv`` (seed, key, label, predicted) for
paired comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fersynth.atomic import atomic_path, write_json
from fersynth.config import above, at_least, check_seeds
from fersynth.demo.truth import read_ground_truth
from fersynth.evaluate.origin import real_and_generated
from fersynth.log import get_logger, progress
from fersynth.modeling.data import BatchLoader, decoded
from fersynth.modeling.floor import Floor, hog_features
from fersynth.modeling.metrics import classification_report, group_accuracy, one_class_check
from fersynth.modeling.plots import confusion_figure, heatmap_figure, save_png
from fersynth.modeling.trained import ClassifierSpec, load_trained
from fersynth.paths import EvaluateLayout, floor_path, ground_truth_path, trial_dirs, trial_seed
from fersynth.variants.files import read_json_bounded
from fersynth.variants.labels import LABEL_SPACES
from fersynth.variants.variant import Variant

log = get_logger(__name__)


@dataclass(frozen=True)
class RobustnessConfig:
    lighting: tuple[float, ...] = (0.5, 1.5)  # multiply pixel values
    resolution: tuple[int, ...] = (2, 4)  # downscale by this factor, then back up
    noise: tuple[float, ...] = (10.0, 25.0)  # Gaussian noise std on the 0-255 scale
    seed: int = 0

    def __post_init__(self) -> None:
        above("evaluate.robustness", 0, lighting=self.lighting)
        at_least("evaluate.robustness", 1, resolution=self.resolution)
        at_least("evaluate.robustness", 0, noise=self.noise)
        check_seeds("evaluate.robustness", seed=self.seed)


@dataclass(frozen=True)
class EvaluateConfig:
    """``params.yaml: evaluate``."""

    models: dict[str, str] = field(default_factory=dict)  # name -> model directory (models/<experiment>)
    test_sets: dict[str, str] = field(default_factory=dict)  # name -> variant directory (its test split is used)
    fairness_on: str = "balanced_set"  # the test set whose demographic columns are used for fairness
    figures_on: tuple[str, ...] = ("fer2013", "balanced_set")  # confusion PNGs (report); CSVs for every test set
    robustness_on: tuple[str, ...] = ()  # test sets perturbed for robustness
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    ground_truth: str = ""  # the demo's folder (data/demo): accuracy against its hidden true labels too
    one_class_share: float = 0.9  # a trial naming one class for this share of a test set's images is flagged

    def __post_init__(self) -> None:
        if not 0.5 < self.one_class_share <= 1:
            raise ValueError(f"evaluate.one_class_share must be in (0.5, 1]: {self.one_class_share}")


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


def evaluate(config: EvaluateConfig, out_dir: Path, models: tuple[str, ...] = ()) -> dict:
    """Score ``models`` (default: all of ``config.models``), then gather every model's scores into the
    summary tables. DVC runs the two steps as separate stages (one per model, then the summary) so that a
    change to one model re-scores only that model."""
    for model_name in models or tuple(config.models):
        evaluate_model(config, model_name, out_dir)
    return summarize_evaluation(config, out_dir)


def evaluate_model(config: EvaluateConfig, model_name: str, out_dir: Path) -> dict:
    """One model on every test set of its label space. A model trained in several trials (seeds) is scored
    by all of them: accuracies are means over the trials, confusion matrices and group accuracies pool the
    trials' predictions (the same images each time), and the predictions CSV keeps one row per (seed, image)
    for paired comparisons. Writes the per-test files and ``scores/<model>.json`` (its rows of the tables)."""
    if model_name not in config.models:
        raise ValueError(f"unknown model {model_name!r}: params evaluate.models has {sorted(config.models)}")
    layout = EvaluateLayout(Path(out_dir))
    model_dir = Path(config.models[model_name])
    dirs = trial_dirs(model_dir)
    trials = [load_trained(d) for d in dirs]  # (model, spec, classes) per trial
    models = {_seed(d, spec): model for d, (model, spec, _) in zip(dirs, trials, strict=True)}  # by seed
    spec, classes = trials[0][1], trials[0][2]
    floor = Floor.load(floor_path(model_dir))
    truth = _TrueLabels(Path(config.ground_truth)) if config.ground_truth else None
    scores: dict[str, dict] = {"accuracy": {}, "macro_f1": {}, "floor": {}, "true_labels": {}, "robustness": {}}
    scores["one_class"] = {}
    scores["fairness"] = None
    for test_name, variant_dir in progress(
        config.test_sets.items(), f"evaluate {model_name}", len(config.test_sets), "test set"
    ):
        rows = test_rows(Path(variant_dir), classes)
        if rows is None:
            scores["accuracy"][test_name] = scores["macro_f1"][test_name] = None
            continue
        images = decoded(Variant(Path(variant_dir)), rows, spec.input)
        labels = rows["label"].to_numpy(np.int64)
        predicted = {seed: predict(model, images, labels) for seed, model in models.items()}
        reports = [classification_report(labels, p, classes) for p in predicted.values()]
        scores["one_class"][test_name] = one_class_check(labels, predicted, classes, config.one_class_share)
        report = mean_report(reports) | {"trials": len(reports)}
        scores["accuracy"][test_name] = round(report["accuracy"], 4)
        scores["accuracy"] |= _by_origin(test_name, rows, labels, predicted)
        scores["macro_f1"][test_name] = round(report["macro avg"]["f1"], 4)
        if floor is not None:
            accuracy = float(np.mean(floor.predict(images, hog_features(images)) == labels))
            scores["floor"][test_name] = round(accuracy, 4)
        if truth is not None:
            scores["true_labels"][test_name] = truth.accuracy(rows, predicted, classes)
        write_json(layout.per_class(model_name, test_name), report)
        _write_predictions(layout.predictions(model_name, test_name), rows, predicted)
        pooled_labels = np.tile(labels, len(predicted))
        pooled = np.concatenate(list(predicted.values()))
        _write_confusion(layout, model_name, test_name, pooled_labels, pooled, classes, config.figures_on)
        if test_name == config.fairness_on:
            scores["fairness"] = {
                column: group_accuracy(
                    pooled_labels,
                    pooled,
                    np.tile(rows[column].fillna("unknown").to_numpy(), len(predicted)),
                    images=len(labels),
                )
                for column in ("gender", "age_group", "ethnicity")
            }
        if test_name in config.robustness_on:
            per_trial = [
                _robustness(model, images, labels, config.robustness, r["accuracy"])
                for model, r in zip(models.values(), reports, strict=True)
            ]
            scores["robustness"][test_name] = {
                k: round(float(np.mean([t[k] for t in per_trial])), 4) for k in per_trial[0]
            }
    write_json(layout.scores(model_name), scores)
    # the figures' folder is a DVC output; Git keeps no empty folder, so it always holds this list (a model with
    # no test set of figures_on, e.g. CASME II's, would otherwise look deleted in a fresh clone)
    drawn = sorted(t for t in config.test_sets if t in config.figures_on and scores["accuracy"].get(t) is not None)
    write_json(layout.confusion_png(model_name, "figures").with_suffix(".json"), {"confusion_png": drawn})
    log.info("evaluate %s (%d trials): %s", model_name, len(models), scores["accuracy"])
    return scores


def summarize_evaluation(config: EvaluateConfig, out_dir: Path) -> dict:
    """Gather ``scores/<model>.json`` of every model of ``config.models`` into the summary tables
    (``cross_dataset.json`` + heatmap, ``macro_f1.json``, ``floor.json``, ``true_labels.json``,
    ``fairness.json``, ``robustness.json``). A model not scored yet is an error naming the command to run."""
    layout = EvaluateLayout(Path(out_dir))
    missing = [m for m in config.models if not layout.scores(m).is_file()]
    if missing:
        raise FileNotFoundError(f"not scored yet: {missing}; run `fersynth evaluate --model NAME` for each")
    scores = {m: read_json_bounded(layout.scores(m), what="model scores") for m in config.models}
    matrix = {m: s["accuracy"] for m, s in scores.items()}
    macro_f1 = {m: s["macro_f1"] for m, s in scores.items()}
    fairness = {m: s["fairness"] for m, s in scores.items() if s["fairness"] is not None}
    robustness = {m: s["robustness"] for m, s in scores.items() if s["robustness"]}
    floors = {m: s["floor"] for m, s in scores.items() if s["floor"]}
    write_json(layout.cross_dataset, matrix)
    write_json(layout.macro_f1, macro_f1)
    write_json(layout.fairness, fairness)
    write_json(layout.robustness, robustness)
    write_json(layout.floor, floor_report(matrix, floors))
    one_class = {m: s["one_class"] for m, s in scores.items() if s["one_class"]}
    write_json(layout.one_class, one_class_report(one_class, config.one_class_share))
    if config.ground_truth:
        write_json(layout.true_labels, {m: s["true_labels"] for m, s in scores.items() if s["true_labels"]})
    save_png(heatmap_figure(matrix, "accuracy: trained on (rows) x tested on (columns)"), layout.cross_dataset_png)
    log.info("evaluate-summary: gathered %d models", len(scores))
    return {"cross_dataset": matrix, "macro_f1": macro_f1, "fairness": fairness, "robustness": robustness}


def floor_report(matrix: dict, floors: dict) -> dict:
    """Each model's HOG + logistic-regression floor (fitted on its own train rows) per test set, and the cells
    where the model scores below it: flagged here, in the log and in the report."""
    below = [
        {"model": model, "test_set": test, "accuracy": matrix[model][test], "floor": floor}
        for model, tests in floors.items()
        for test, floor in tests.items()
        if matrix[model].get(test) is not None and matrix[model][test] < floor
    ]
    for cell in below:
        log.warning(
            "evaluate: %s scores %.3f on %s, below its HOG + logistic-regression floor %.3f",
            cell["model"], cell["accuracy"], cell["test_set"], cell["floor"],
        )  # fmt: skip
    return {"floor": floors, "below_floor": below, "models_below_floor": len({c["model"] for c in below})}


def one_class_report(checks: dict[str, dict[str, dict]], share: float) -> dict:
    """:func:`~fersynth.modeling.metrics.one_class_check` of every model x test set: the most-named class's
    largest share in any trial per cell (``top_share``) and the ``flagged`` cells with their reasons: flagged
    here, in the log and in the report, because such a model's accuracies describe the test set's class mix
    (a one-class model scores each group's share of that class), not what it learnt."""
    flagged = []
    for model, tests in checks.items():
        for test, check in tests.items():
            reasons = []
            if check["one_class_seeds"]:
                reasons.append(
                    f"names {check['top_class']} for {100 * check['top_share']:.0f}% of the images in "
                    f"{len(check['one_class_seeds'])} of {check['trials']} trials"
                )
            if check["accuracy"] <= check["constant_accuracy"]:
                reasons.append(
                    f"no better than always naming {check['constant_class']} ({100 * check['accuracy']:.1f}% "
                    f"vs {100 * check['constant_accuracy']:.1f}%)"
                )
            if reasons:
                flagged.append({"model": model, "test_set": test, "reasons": reasons, **check})
                log.warning("evaluate: %s on %s %s", model, test, "; ".join(reasons))
    return {
        "share": share,
        "top_share": {model: {test: c["top_share"] for test, c in tests.items()} for model, tests in checks.items()},
        "flagged": flagged,
        "models_flagged": len({c["model"] for c in flagged}),
    }


class _TrueLabels:
    """The demo's hidden true emotions by (dataset, native source): :func:`fersynth.paths.ground_truth_path`."""

    def __init__(self, demo_root: Path):
        self.demo_root, self._tables = demo_root, {}

    def _table(self, dataset: str) -> pd.Series | None:
        if dataset not in self._tables:
            path = ground_truth_path(self.demo_root, dataset)
            self._tables[dataset] = read_ground_truth(path)["true_emotion"] if path.is_file() else None
        return self._tables[dataset]

    def accuracy(self, rows: pd.DataFrame, predicted: dict, classes: tuple[str, ...]) -> dict:
        """Accuracy against the true labels (mean over trials) on the rows whose truth is known, their number,
        and how many of them carry a flipped label."""
        true = pd.Series(np.nan, index=rows.index, dtype=object)
        for dataset, group in rows.groupby("dataset"):
            table = self._table(str(dataset))
            if table is not None:
                true[group.index] = group["source"].map(table)
        index = {c: i for i, c in enumerate(classes)}
        true_label = true.map(index)
        known = true_label.notna().to_numpy()
        if not known.any():
            return {"accuracy": None, "images": 0, "flipped": 0}
        truth = true_label.to_numpy()[known].astype(int)
        accuracy = np.mean([np.mean(p[known] == truth) for p in predicted.values()])
        flipped = int((rows["label"].to_numpy()[known] != truth).sum())
        return {"accuracy": round(float(accuracy), 4), "images": int(known.sum()), "flipped": flipped}


def _by_origin(test_name: str, rows: pd.DataFrame, labels: np.ndarray, predicted: dict) -> dict:
    """``<test>_real`` and ``<test>_generated`` accuracies of a test set mixing both (the balanced set)."""
    out = {}
    for part, mask in real_and_generated(rows).items():
        mask = mask.to_numpy()
        accuracy = np.mean([np.mean(p[mask] == labels[mask]) for p in predicted.values()])
        out[f"{test_name}_{part}"] = round(float(accuracy), 4)
    return out


def mean_report(reports: list[dict]) -> dict:
    """The element-wise mean of classification reports of the same shape (supports stay as they are)."""
    first = reports[0]
    if not isinstance(first, dict):
        return float(np.mean(reports))
    return {k: (first[k] if k == "support" else mean_report([r[k] for r in reports])) for k in first}


def _seed(trial_dir: Path, spec: ClassifierSpec) -> int:
    """The trial's seed: from its ``seed-<s>`` directory, else (a single-trial model) its config's."""
    seed = trial_seed(trial_dir)
    return spec.seed if seed is None else seed


def _robustness(model, images, labels, config: RobustnessConfig, clean: float) -> dict:
    out = {"clean": round(clean, 4)}
    for kind, values in (("lighting", config.lighting), ("resolution", config.resolution), ("noise", config.noise)):
        for value in values:
            predicted = predict(model, perturb(images, kind, value, config.seed), labels)
            out[f"{kind}_{value:g}"] = round(float((predicted == labels).mean()), 4)
    return out


def _write_predictions(path: Path, rows: pd.DataFrame, predicted: dict[int, np.ndarray]) -> None:
    keys, labels = rows["key"].to_numpy(), rows["label"].to_numpy(np.int64)
    frame = pd.concat(
        [pd.DataFrame({"seed": seed, "key": keys, "label": labels, "predicted": p}) for seed, p in predicted.items()],
        ignore_index=True,
    )
    frame["correct"] = frame["label"] == frame["predicted"]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _write_confusion(layout: EvaluateLayout, model: str, test: str, labels, predicted, classes, figures_on) -> None:
    """The CSV (DVC's confusion plot) for every test set; the PNG (the report) only for ``figures_on``: a
    figure costs ~0.3 s, and every model x test set made 102 of them (38 s of the stage)."""
    with atomic_path(layout.confusion(model, test)) as tmp:
        pd.DataFrame({"actual": [classes[i] for i in labels], "predicted": [classes[i] for i in predicted]}).to_csv(
            tmp, index=False
        )
    if test in figures_on:
        save_png(confusion_figure(labels, predicted, classes, test), layout.confusion_png(model, test))
