"""A model card (``MODEL_CARD.md``) in every ``fersynth train`` model directory: what the model is, the
data variants it learnt from (with their manifests' sha256, so the card names the exact data), its
settings, its test results with intervals, and what it is and is not for.

The card is written with the weights and depends on nothing else (no clock, no commit: the same training
gives the same bytes, so DVC does not see a changed model). Results that need other stages (every
test set, fairness gaps with intervals on the balanced set, robustness) are in the report, which the card
points to."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from fersynth.train.selection import RULE, best_trial

INTENDED_USE = (
    "Research on whether synthetic faces (Stable Diffusion, SDXL, DDPM) or SMOTE samples help a facial-"
    "expression classifier, compared against models trained without them under the same split and seeds. "
    "Not for decisions about people: an expression is not an emotion, and accuracy differs between groups."
)

LIMITS = (
    "Labels are the datasets' (posed or crowd-labelled, relabelled by `fersynth relabel` where the pipeline "
    "says so), not what a person felt.",
    "Demographic groups used for fairness are predicted (the UTKFace-trained age / gender / ethnicity model), "
    "except where a dataset ships them.",
    "On the embedded demo the faces are drawn cartoons: the numbers test the pipeline, not the science, and "
    "the model means nothing on photographs.",
    "One split, a few seeds: a single trial's accuracy moves with its seed (the seed sd is in "
    "`metrics/train/<experiment>.json`); compare experiments with `fersynth compare`, which pairs seeds, states "
    "the smallest difference it could detect and how many seeds a smaller one needs (benchmarks/bench_power.py).",
)


def model_card(experiment: str, config, metrics: dict, variant_hashes: dict[str, str]) -> str:
    """The card's Markdown. ``config`` is the ``TrainConfig``; ``metrics`` what ``train`` writes."""
    settings = asdict(config)
    rows = metrics["rows"]
    low, high = metrics["test_accuracy_ci95"]
    lines = [
        f"# Model card: `{experiment}`",
        "",
        f"Made by `fersynth train {experiment}` (its `dvc.yaml` stage; settings: `params.yaml: train."
        f"{experiment}`). Weights: safetensors with a `config.json` per trial; load them with "
        "`fersynth.modeling.trained.load_trained` or try them with `fersynth predict` / `fersynth serve`.",
        "",
        "## Model",
        "",
        f"- Architecture `{config.architecture}` (width x{config.width:g}), input {config.input.size} px, "
        f"{'grey' if config.input.channels == 1 else 'RGB'}; classes: {', '.join(metrics['classes'])}.",
        f"- {config.trials} trial(s), seeds {', '.join(str(s) for s in metrics['seeds'])}, on one split.",
        "",
        "## Data",
        "",
        "| variant | manifest sha256 |",
        "| --- | --- |",
        *(f"| `{path}` | `{digest}` |" for path, digest in variant_hashes.items()),
        "",
        f"Rows: train {rows['train']} (synthetic {rows.get('synthetic_train', 0)}), val {rows['val']}, "
        f"test {rows['test']}; validation {metrics['validation'].get('grouped_by', 'row')}-grouped.",
        "",
        "## Training",
        "",
        f"- {settings['optimizer']} at {settings['learning_rate']:g} (weight decay {settings['weight_decay']:g}), "
        f"batch {settings['batch_size']}, {settings['epochs']} epochs, {_schedule(settings)}, label smoothing "
        f"{settings['label_smoothing']:g}, augmentation `{settings['augment']}`, "
        f"early stopping {settings['early_stopping'] or 'off'}"
        + (
            f"; planted label noise: {settings['label_noise']:g} of the train labels flipped."
            if settings["label_noise"]
            else "."
        ),
        f"- Synthetic train rows: {_cap(settings['synthetic_per_class'])} per class, "
        f"{_cap(settings['synthetic_ratio'])} per real train row.",
        "",
        "## Results on the test split of its data",
        "",
        f"Test accuracy {100 * metrics['test_accuracy']:.1f}% ({_interval(low, high, config.trials)}), "
        f"macro-F1 {100 * metrics['test_macro_f1']:.1f}%.",
        "",
        "| seed | best epoch | val accuracy | test accuracy | test macro-F1 |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {t['seed']} | {t['best_epoch']} | {100 * t['best_val_accuracy']:.1f} | "
            f"{100 * t['test_accuracy']:.1f} | {100 * t['test_macro_f1']:.1f} |"
            for t in metrics["trials"]
        ),
        "",
        f"The trial registered in MLflow and run by `fersynth predict` / `fersynth serve`: seed "
        f"{best_trial(metrics['trials'])['seed']} ({RULE}; `trials.json`).",
        "",
        "Every other test set, per-class reports, fairness gaps per gender / age group / ethnicity with their "
        "intervals, robustness and the with-vs-without comparisons: `reports/index.html` (stages `evaluate`, "
        "`compare`, `report`).",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Known limits",
        "",
        *(f"- {limit}" for limit in LIMITS),
        "",
    ]
    return "\n".join(lines)


def _cap(value: float) -> str:
    return "no cap" if value < 0 else f"at most {value:g}"


def _interval(low: float, high: float, trials: int) -> str:
    if trials < 2:
        return "one trial: no interval over seeds; set `trials` >= 2 for one"
    return f"95% interval over {trials} seeds {100 * low:.1f}-{100 * high:.1f}%"


def write_model_card(directory: Path, experiment: str, config, metrics: dict, variant_hashes: dict[str, str]) -> str:
    """Write ``MODEL_CARD.md`` into ``directory``; returns its text (also the registered version's description)."""
    card = model_card(experiment, config, metrics, variant_hashes)
    (Path(directory) / "MODEL_CARD.md").write_text(card)
    return card


def _schedule(settings: dict) -> str:
    if settings["schedule"] == "plateau":
        return f"learning rate x{settings['lr_factor']:g} after {settings['lr_patience']} epochs without progress"
    if settings["schedule"] == "one_cycle":
        return f"one-cycle schedule ({100 * settings['warmup']:g}% of the steps rising to the peak)"
    return "cosine schedule"
