"""``fersynth`` commands that annotate a variant: relabelling, filtering, auto-labelling, calibration by judges,
and the age / gender / race predictor."""

from __future__ import annotations

from pathlib import Path

import click

from fersynth.cli.group import main
from fersynth.config import build, load_params, section
from fersynth.options import metrics_option, model_dir_option, output_option, params_option, variant_out_option


@main.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@variant_out_option()
@metrics_option(help="Where to write relabel metrics (JSON).")
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Demo ground-truth CSV: score the relabelling against the flipped labels.",
)
@params_option()
def relabel(source: Path, out: Path, metrics_path: Path | None, truth: Path | None, params_path: Path) -> None:
    """Relabel SOURCE's noisy labels (self_filter or confident_learning); images and splits unchanged."""
    from fersynth.annotate.relabel import RelabelConfig, relabel_variant

    config = build(RelabelConfig, section(load_params(params_path), "relabel"))
    relabel_variant(source, out, config, metrics_path, truth)


@main.command(name="demographics-train")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_dir_option(
    default=Path("models/demographics"), show_default=True, help="Where to save the weights (safetensors) and config."
)
@metrics_option(
    default=Path("metrics/demographics.json"), show_default=True, help="Test accuracies and age MAE (JSON)."
)
@params_option()
def demographics_train_command(variant: Path, model_dir: Path, metrics_path: Path, params_path: Path) -> None:
    """Train the age / gender / race predictor on the UTKFace VARIANT; logged to MLflow."""
    from fersynth.annotate.demographics.train import DemographicsConfig, train_demographics

    config = build(DemographicsConfig, section(load_params(params_path), "demographics"))
    train_demographics(variant, model_dir, config, metrics_path)


@main.command(name="demographics-predict")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--model-dir",
    type=click.Path(exists=True, path_type=Path),
    default=Path("models/demographics"),
    show_default=True,
    help="A model saved by demographics-train.",
)
@variant_out_option()
@output_option("--plot", kind="file", help="Distribution plot (PNG).")
@click.option(
    "--truth",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Demo ground-truth directory (<dataset>.csv files): score the predictions.",
)
@params_option()
def demographics_predict_command(
    variant: Path, model_dir: Path, out: Path, plot: Path | None, truth: Path | None, params_path: Path
) -> None:
    """Add predicted gender, age, age group and ethnicity (with confidences) to a copy of VARIANT."""
    from fersynth.annotate.demographics.predict import DemographicsPredictConfig, predict_demographics

    config = build(DemographicsPredictConfig, section(load_params(params_path), "demographics_predict"))
    predict_demographics(variant, model_dir, out, plot, truth, config.batch_size, config.backend)


@main.command(name="filter")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@variant_out_option()
@metrics_option(help="Where to write flag counts (JSON).")
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Demo ground-truth CSV: score the flags against the planted blank / noise images.",
)
@params_option()
def filter_command(source: Path, out: Path, metrics_path: Path | None, truth: Path | None, params_path: Path) -> None:
    """Flag excessively noisy or unrecognisable images of SOURCE by grey-level entropy (paper 000)."""
    from fersynth.annotate.filtering import FilterConfig, filter_variant

    config = build(FilterConfig, section(load_params(params_path), "filter"))
    filter_variant(source, out, config, metrics_path, truth)


@main.command(name="autolabel")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@variant_out_option(help="Labeled variant directory to write.")
@metrics_option(help="Counts and agreement (JSON).")
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Demo ground-truth CSV: the hidden true emotions, to score the auto-labels.",
)
@params_option()
def autolabel_command(
    source: Path, out: Path, metrics_path: Path | None, truth: Path | None, params_path: Path
) -> None:
    """Label the unlabeled faces of SOURCE with a trained FER model and downsample them to a reference
    variant's class counts (paper 003's SFHQ protocol). Refuses a model trained on a compared model's data
    or on a test set OUT's models are compared on."""
    from fersynth.annotate.autolabel import AutolabelConfig, autolabel, check_labeler

    params = load_params(params_path)
    config = build(AutolabelConfig, section(params, "autolabel"))
    check_labeler(Path(config.model), out, params)
    autolabel(source, out, config, metrics_path, truth)


@main.command(name="calibrate")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@variant_out_option(help="Calibrated variant directory to write.")
@metrics_option(help="Agreement and decisions (JSON).")
@params_option()
def calibrate_command(source: Path, out: Path, metrics_path: Path | None, params_path: Path) -> None:
    """Let the judges of configs/calibrate.yaml (`judges`) vote on every generated face of SOURCE; faces whose vote
    is not the emotion they were generated for are relabelled or dropped (`action`). Refuses a judge
    that is a compared model, learned from synthetic rows, or would carry a compared model's data into OUT."""
    from fersynth.annotate.calibrate import CalibrateConfig, calibrate, check_judges, load_judges

    params = load_params(params_path)
    config = build(CalibrateConfig, section(params, "calibrate"))
    judges = load_judges(config)
    check_judges([judge.info for judge in judges], out, params)
    calibrate(source, out, config, judges, metrics_path)
