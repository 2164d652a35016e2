"""The ``fersynth`` command group, which every command module of this package registers its commands on, and its
error handling; here, not in the package's ``__init__``, so that those modules import it without an import circle."""

from __future__ import annotations

from pathlib import Path

import click

from fersynth.errors import FersynthError

# Commands renamed by issue 23 (one name per concept), old -> new. The old name keeps working for one release: it
# runs the new command after one line on stderr, and `fersynth --help` lists only the new one. Remove in the next.
RENAMED = {
    "agr-train": "demographics-train",
    "agr-predict": "demographics-predict",
    "reclassify": "relabel",
    "evaluator": "balanced-set",
}


class Commands(click.Group):
    """The command group; a user error (:class:`~fersynth.errors.FersynthError`) becomes one line on
    stderr and its exit code (2: usage, 1: input), never a traceback. An old name of :data:`RENAMED` runs its
    new command (said on stderr); it is in no listing."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        new = RENAMED.get(args[0]) if args else None
        if new is not None and args[0] not in self.commands:
            if not ctx.resilient_parsing:  # shell completion resolves too: it says nothing
                click.echo(f"fersynth: '{args[0]}' is now '{new}'; the old name goes in the next release", err=True)
            args = [new, *args[1:]]
        return super().resolve_command(ctx, args)

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


def named_dirs(items: tuple[str, ...]) -> dict[str, Path]:
    """``--source NAME=DIR`` values (``merge``, ``balanced-set``) as ``{NAME: DIR}``; each DIR must exist."""
    parsed = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_dir():
            raise click.BadParameter(f"expected NAME=DIR with an existing DIR, got {item!r}", param_hint="--source")
        parsed[name] = Path(path)
    return parsed
