"""``fersynth`` commands that run the project rather than a stage: the warm server, the MLflow server and store,
model versions and the offline plots template."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fersynth.cli.group import main
from fersynth.options import folder_option, output_option

WARM_ENTRY = "fersynth.cli:main"
"""The command group a ``fersynth warm`` server's workers run (:func:`fersynth.ops.warm_worker.entry_point`), named
here so that the warm server never imports the command line (no import circle). By name, and the package's, not
:mod:`fersynth.cli.group`'s: importing the package is what registers every command on ``main``."""


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
