"""The ``fersynth`` command line: one thin subcommand per stage. Each loads its typed config from
``params.yaml`` and calls the stage's worker function.

:data:`main` (:mod:`fersynth.cli.group`) is the command group; one module per phase of the pipeline registers its
commands on it, imported here for that, so ``fersynth.cli:main`` has every command. :func:`run` is the console
script."""

from __future__ import annotations

import sys
from pathlib import Path

import click

# imported for their commands, which they register on main
from fersynth.cli import annotate, data, generate, ops, predict, report, train  # noqa: F401
from fersynth.cli.group import main
from fersynth.errors import FersynthError

__all__ = ["main", "run"]


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
