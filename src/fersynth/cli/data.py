"""``fersynth`` commands that make and check variants: the demo sources, ingest, merge, export, validate and
the Data Docs site."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fersynth.cli.group import main, named_dirs
from fersynth.config import build, load_params, section
from fersynth.options import folder_option, metrics_option, output_argument, params_option, variant_out_option


@main.command()
@folder_option(
    "--out",
    default=Path("data/demo"),
    show_default=True,
    help="Directory to write the demo copies of every source dataset into.",
)
@click.option(
    "--only",
    multiple=True,
    help="Write only these datasets (repeatable) [default: `datasets` of configs/demo.yaml].",
)
@params_option()
def demo(out: Path, only: tuple[str, ...], params_path: Path) -> None:
    """Generate demo copies of FER2013, NHFI, AffectNet, CASME II, UTKFace and SFHQ in their native formats."""
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
    help="Suite name under `suites` of configs/validate.yaml [default: the suite whose `variant` is VARIANT, else "
    "the variant's directory name].",
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
    help="Section holding the suite instead: configs/<section>.yaml (e.g. balanced_set_suite), or a dotted key into "
    "one [default: validate.suites.<suite>, in configs/validate.yaml].",
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

    from fersynth.checks.leakage import balanced_set_not_in
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
        config = replace(config, not_in=tuple(dict.fromkeys((*balanced_set_not_in(params, variant), *config.not_in))))
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
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    metavar="NAME=DIR",
    help="A variant to merge, e.g. fer2013=data/relabelled/fer2013 (repeatable).",
)
@variant_out_option()
@params_option()
def merge(sources: tuple[str, ...], out: Path, params_path: Path) -> None:
    """Merge variants into one (paper 001's merged dataset), keeping provenance and native formats."""
    from fersynth.ingest.merge import MergeConfig, merge_variants

    merge_variants(named_dirs(sources), out, build(MergeConfig, section(load_params(params_path), "merge")))


@main.command()
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_argument("out", kind="export")
@click.option("--flat", is_flag=True, help="One folder per class, without split folders.")
def export(variant: Path, out: Path, flat: bool) -> None:
    """Write a browsable folder-per-class copy of VARIANT under OUT (e.g. train/0_angry/...)."""
    from fersynth.ingest.export import export_variant

    export_variant(variant, out, by_split=not flat)
