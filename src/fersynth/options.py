"""Click options the commands share. Every option that names a path fersynth writes checks it against the
output rule (:func:`fersynth.atomic.check_target`) while the command line is parsed, so a refused
``--metrics dvc.yaml`` costs nothing: no training lost, no MLflow run started, no side output half written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fersynth.atomic import FOLDER, check_target
from fersynth.errors import UnsafeOutput

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True)
class OutputRule:
    """The click callback of every output option and argument.

    ``kind`` is what :func:`~fersynth.atomic.check_target` takes (``file``, ``variant``, ``model``, ...,
    or :data:`~fersynth.atomic.FOLDER`); ``earlier_output`` recognises a project file that is the
    command's own earlier output and is replaced in place (the committed plots template, inside ``.dvc``).
    The write itself checks again: something may appear at the path while the stage works.
    """

    kind: str
    earlier_output: Callable[[Path], bool] | None = None

    def __call__(self, ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        if value is None or ctx.resilient_parsing:  # not given, or shell completion: nothing to write
            return value
        if self.earlier_output is not None and self.earlier_output(value):
            return value
        try:
            check_target(value, self.kind)
        except UnsafeOutput as error:  # a FersynthError: the command group prints it as one line, exit 2
            raise UnsafeOutput(f"{param.get_error_hint(ctx)}: {error}") from None
        return value


def output_option(
    *decls: str,
    kind: str,
    help: str,
    earlier_output: Callable[[Path], bool] | None = None,
    **kwargs: Any,
) -> Decorator:
    """An option naming a path fersynth writes (``kind`` as :class:`OutputRule` takes it); ``kwargs`` go to
    :func:`click.option` (``default``, ``required``, ``show_default``). A file where a directory belongs, or
    the reverse, is the rule's refusal too (one line), not click's ``file_okay`` / ``dir_okay``.

    >>> @output_option("--plots-dir", kind="folder", help="Where the plots go.")  # doctest: +SKIP
    ... def compare(plots_dir): ...
    """
    path = click.Path(path_type=Path)
    return click.option(*decls, type=path, callback=OutputRule(kind, earlier_output), help=help, **kwargs)


def output_argument(name: str, kind: str) -> Decorator:
    """A positional argument naming a path fersynth writes (``fersynth export VARIANT OUT``)."""
    return click.argument(name, type=click.Path(path_type=Path), callback=OutputRule(kind))


def out_option(kind: str, help: str, **kwargs: Any) -> Decorator:
    """``--out``: the stage's main output, of ``kind``."""
    return output_option("--out", kind=kind, help=help, **kwargs)


def variant_out_option(help: str = "Variant directory to write.") -> Decorator:
    """``--out`` of the stages that write one variant (required: dvc.yaml names every variant)."""
    return out_option("variant", help, required=True)


def metrics_option(help: str, **kwargs: Any) -> Decorator:
    """``--metrics`` (parameter ``metrics_path``): one JSON file of the stage's numbers."""
    return output_option("--metrics", "metrics_path", kind="file", help=help, **kwargs)


def model_dir_option(help: str, **kwargs: Any) -> Decorator:
    """``--model-dir``: the model directory a training stage writes (marker ``model``)."""
    return output_option("--model-dir", kind="model", help=help, **kwargs)


def folder_option(*decls: str, help: str, **kwargs: Any) -> Decorator:
    """An option naming a folder a stage writes files into, each file an output of its own (``--plots-dir``,
    a Data Docs site): the folder may not lie inside ``.git`` or ``.dvc``, be a file, or hold a repository."""
    return output_option(*decls, kind=FOLDER, help=help, **kwargs)


def params_option() -> Decorator:
    """``--params`` (parameter ``params_path``): the params file a stage reads; never written."""
    return click.option(
        "--params",
        "params_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="params.yaml to read the stage's section from, with the configs/*.yaml beside it [default: the "
        "project's params.yaml, found from the working directory].",
    )
