"""``fersynth`` commands that turn the scores into answers: comparisons, the summary, the HTML report, contact
sheets and the docs' result tables."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fersynth.cli.group import main
from fersynth.config import build, load_params, section
from fersynth.errors import UsageError
from fersynth.options import folder_option, out_option, params_option


@main.command(name="contact-sheet")
@click.argument("variant", type=click.Path(exists=True, file_okay=False, path_type=Path))
@out_option("sheets", required=True, help="Directory: one PNG per class.")
@click.option("--per-class", default=24, show_default=True, help="Thumbnails per class.")
@click.option("--all-rows", is_flag=True, help="Real rows too (default: synthetic rows only).")
def contact_sheet(variant: Path, out: Path, per_class: int, all_rows: bool) -> None:
    """One PNG grid of faces per class of VARIANT."""
    from fersynth.report.contact_sheet import contact_sheets

    contact_sheets(variant, out, per_class=per_class, synthetic_only=not all_rows)


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


@main.command(name="results")
@click.option(
    "--readme",
    "pages",
    type=click.Path(dir_okay=False, path_type=Path),
    multiple=True,
    show_default="README.md and docs/*.md",
    help="A markdown page whose result tables are checked or rewritten (repeat for several).",
)
@click.option(
    "--metrics",
    "metrics_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("metrics"),
    show_default=True,
    help="The metrics folder the tables are rendered from.",
)
@click.option("--write", is_flag=True, help="Rewrite the pages' result tables (default: check; exit 1 if stale).")
def results_command(pages: tuple[Path, ...], metrics_dir: Path, write: bool) -> None:
    """The result tables of README.md and the docs/ pages (between `<!-- results:NAME -->` markers), rendered
    from the metrics files after a `dvc repro`: every number there comes from a metrics file
    (docs/development.md)."""
    from fersynth.report.results import render
    from fersynth.variants.files import read_input

    stale = []
    for page in pages or (Path("README.md"), *sorted(Path("docs").glob("*.md"))):
        text = read_input(page, 16 << 20, "page").decode("utf-8", errors="replace")
        try:
            rendered = render(text, metrics_dir)
        except ValueError as error:
            raise UsageError(f"{page}: {error}") from None
        if write:
            if rendered != text:
                page.write_text(rendered, encoding="utf-8")
            click.echo(f"{page}: result tables {'rewritten' if rendered != text else 'already current'}")
        elif rendered != text:
            click.echo(f"{page}: result tables differ from {metrics_dir} (fersynth results --write)", err=True)
            stale.append(page)
        else:
            click.echo(f"{page}: result tables match {metrics_dir}")
    if stale:
        sys.exit(1)
