"""``fersynth`` commands that train the classifiers and score them on every test set."""

from __future__ import annotations

from pathlib import Path

import click

from fersynth.cli.group import main
from fersynth.config import build, load_params, section
from fersynth.options import folder_option, metrics_option, model_dir_option, params_option


@main.command(name="train")
@click.argument("experiment")
@model_dir_option(help="Where to save the trained trials [default: models/<EXPERIMENT>].")
@metrics_option(help="The trials' test metrics and floor (JSON) [default: metrics/train/<EXPERIMENT>.json].")
@params_option()
def train_command(experiment: str, model_dir: Path | None, metrics_path: Path | None, params_path: Path) -> None:
    """Train the classifier configured in params `train.EXPERIMENT`; logged to MLflow."""
    from fersynth.train.recipe import TrainConfig
    from fersynth.train.train import train

    config = build(TrainConfig, section(load_params(params_path), f"train.{experiment}"))
    train(
        config,
        model_dir or Path("models") / experiment,
        metrics_path or Path("metrics") / "train" / f"{experiment}.json",
        run_name=experiment,
        history_path=Path("metrics") / "train" / "history" / f"{experiment}.csv",
    )


@main.command(name="evaluate")
@folder_option(
    "--out", default=Path("metrics/evaluate"), show_default=True, help="Folder of the scores and summary tables."
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Score only this model of params evaluate.models (repeatable; one DVC stage per model) and leave the "
    "summary tables to `fersynth evaluate-summary`. Without it: every model, then the summary tables.",
)
@params_option()
def evaluate_command(out: Path, models: tuple[str, ...], params_path: Path) -> None:
    """Every model x every test set of params `evaluate`: accuracy matrix, per-class, confusion, fairness,
    robustness."""
    from fersynth.evaluate.evaluate import EvaluateConfig, evaluate, evaluate_model

    config = build(EvaluateConfig, section(load_params(params_path), "evaluate"))
    unknown = sorted(set(models) - set(config.models))
    if unknown:
        raise click.BadParameter(
            f"{unknown} not in params evaluate.models {sorted(config.models)}", param_hint="--model"
        )
    if not models:
        evaluate(config, out)
    for model in models:
        evaluate_model(config, model, out)


@main.command(name="evaluate-summary")
@folder_option(
    "--out", default=Path("metrics/evaluate"), show_default=True, help="Folder of the scores and summary tables."
)
@params_option()
def evaluate_summary_command(out: Path, params_path: Path) -> None:
    """Gather every model's scores (`fersynth evaluate --model`) into the tables: cross_dataset.json (+ heatmap),
    macro_f1, floor, true_labels, fairness, robustness."""
    from fersynth.evaluate.evaluate import EvaluateConfig, summarize_evaluation

    summarize_evaluation(build(EvaluateConfig, section(load_params(params_path), "evaluate")), out)
