"""``fersynth`` commands that generate faces or rebalance: the quality gate, the diffusers datasets, the DDPM,
the balanced set and SMOTE."""

from __future__ import annotations

from pathlib import Path

import click

from fersynth.cli.group import main, named_dirs
from fersynth.config import build, load_params, section
from fersynth.options import (
    folder_option,
    metrics_option,
    model_dir_option,
    out_option,
    params_option,
    variant_out_option,
)


@main.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@variant_out_option()
@click.option(
    "--section",
    "section_name",
    default="smote",
    show_default=True,
    help="Settings section, configs/<section>.yaml (smote: paper 004's pipeline; smote_only: SMOTE alone, nothing "
    "undersampled).",
)
@params_option()
def smote(source: Path, out: Path, section_name: str, params_path: Path) -> None:
    """Balance SOURCE's train split (image-generator augmentation + SMOTE + undersampling, paper 004; or SMOTE
    alone up to the largest class); val and test are copied unchanged."""
    from fersynth.generate.smote import SmoteConfig, build_smote_variant

    build_smote_variant(source, out, build(SmoteConfig, section(load_params(params_path), section_name)))


@main.command(name="gate-train")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_dir_option(required=True, help="Where to save the classifier.")
@metrics_option(help="Val / test accuracy (JSON).")
@params_option()
def gate_train_command(variant: Path, model_dir: Path, metrics_path: Path | None, params_path: Path) -> None:
    """Train the quality gate's emotion classifier on VARIANT's train split."""
    from fersynth.generate.gate_classifier import GateTrainConfig, gate_train

    gate_train(
        variant, model_dir, build(GateTrainConfig, section(load_params(params_path), "gate_train")), metrics_path
    )


@main.command()
@click.option(
    "--in", "in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True, help="Images."
)
@out_option("file", required=True, help="CSV: file, accepted, reason, faces, score.")
@click.option(
    "--no-emotion", is_flag=True, help="Do not read the intended emotion from file or folder names (no emotion check)."
)
@params_option()
def gate(in_dir: Path, out: Path, no_emotion: bool, params_path: Path) -> None:
    """Gate every image under --in: one face, not dark / washed out / blank / blurred, intended emotion."""
    from fersynth.generate.gate import GateConfig, gate_directory

    gate_directory(in_dir, out, build(GateConfig, section(load_params(params_path), "gate")), not no_emotion)


@main.command(name="generate-artificial")
@variant_out_option()
@metrics_option(help="Acceptance per emotion (JSON).")
@click.option(
    "--section",
    "section_name",
    default="sd_artificial",
    show_default=True,
    help="Settings section, configs/<section>.yaml.",
)
@params_option()
def generate_artificial_command(out: Path, metrics_path: Path | None, section_name: str, params_path: Path) -> None:
    """Generate the all-artificial dataset (paper 001 Table 7) over every emotion x demographic cell."""
    from fersynth.generate.artificial import ArtificialConfig, generate_artificial
    from fersynth.generate.gate import GateConfig

    params = load_params(params_path)
    config = build(ArtificialConfig, section(params, section_name))
    generate_artificial(out, config, build(GateConfig, section(params, "gate")), metrics_path)


@main.command(name="generate-augmented")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@variant_out_option()
@metrics_option(help="Acceptance per emotion (JSON).")
@click.option(
    "--section",
    "section_name",
    default="fer2013_sdxl",
    show_default=True,
    help="Settings section, configs/<section>.yaml (fer2013_rendered: the planted benefit's rendered faces).",
)
@params_option()
def generate_augmented_command(
    source: Path, out: Path, metrics_path: Path | None, section_name: str, params_path: Path
) -> None:
    """SOURCE plus generated train images per class (paper 000: FER2013 + 300 SDXL per class)."""
    from fersynth.generate.augmented import AugmentedConfig, generate_augmented
    from fersynth.generate.gate import GateConfig

    params = load_params(params_path)
    config = build(AugmentedConfig, section(params, section_name))
    generate_augmented(source, out, config, build(GateConfig, section(params, "gate")), metrics_path)


@main.command(name="ddpm-train")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_dir_option(required=True, help="Where to save UNet + scheduler.")
@metrics_option(help="Loss curve (JSON).")
@params_option()
def ddpm_train_command(variant: Path, model_dir: Path, metrics_path: Path | None, params_path: Path) -> None:
    """Train paper 002's class-conditional DDPM on the train subjects of the CASME II VARIANT."""
    from fersynth.generate.ddpm import DdpmTrainConfig, ddpm_train

    ddpm_train(
        variant, model_dir, build(DdpmTrainConfig, section(load_params(params_path), "ddpm_train")), metrics_path
    )


@main.command(name="ddpm-sample")
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="ddpm-train output.",
)
@variant_out_option()
@metrics_option(help="Sampler, steps, acceptance (JSON).")
@params_option()
def ddpm_sample_command(model_dir: Path, out: Path, metrics_path: Path | None, params_path: Path) -> None:
    """Sample the trained DDPM per class (paper 002 Table 2 proportions) into a gated variant."""
    from fersynth.generate.ddpm import DdpmSampleConfig, ddpm_sample

    ddpm_sample(model_dir, out, build(DdpmSampleConfig, section(load_params(params_path), "ddpm_sample")), metrics_path)


@main.command()
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    metavar="NAME=DIR",
    help="A source variant with demographics, e.g. nhfi=data/demographics/nhfi (repeatable).",
)
@variant_out_option()
@folder_option("--metrics-dir", help="Tables 4-6 as JSON files.")
@params_option()
def balanced_set(sources: tuple[str, ...], out: Path, metrics_dir: Path | None, params_path: Path) -> None:
    """Build paper 001's balanced set from the sources' test splits, completed with generated faces."""
    from fersynth.generate.balanced_set import BalancedSetConfig, build_balanced_set
    from fersynth.generate.gate import GateConfig

    params = load_params(params_path)
    build_balanced_set(
        named_dirs(sources),
        out,
        build(BalancedSetConfig, section(params, "balanced_set")),
        build(GateConfig, section(params, "gate")),
        metrics_dir,
    )
