"""Errors a user can cause and fix: the CLI prints them as one line (no traceback) and exits non-zero.

Anything else that escapes a command is a bug in fersynth and keeps its traceback.
"""

from __future__ import annotations


class FersynthError(Exception):
    """Base of the user-facing errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(FersynthError):
    """A command line or ``params.yaml`` that cannot be right: unknown name or key, a missing section,
    an output path that would destroy data. Exit 2, like click's own usage errors."""

    exit_code = 2


class ParamsError(UsageError, ValueError):
    """A bad ``params.yaml`` (also a ``ValueError``, as config validation always raised)."""


class UnsafeOutput(UsageError):
    """An output path fersynth refuses to replace (it holds data fersynth did not write, or an input)."""


class InputError(FersynthError):
    """Input data that cannot be used as a whole: a bad header, an unreadable sheet, a source with no
    usable image. Single bad rows or files never raise this: they go to quarantine."""
