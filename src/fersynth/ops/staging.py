"""Staging folders a killed stage left beside its outputs, removed before `fersynth warm` runs the next command.

A stage builds each output in ``.<name>.fersynth-stage-<pid>-<random>`` beside it and swaps it in
(:mod:`fersynth.atomic`); a kill leaves that folder behind. The next write of the same output removes it, but when
DVC restores the output from its run-cache the stage never runs, and the folder would sit in the project (inside
``reports/contact_sheets/``, a dependency of ``report``) forever. ``.dvcignore`` keeps such folders out of every
hash; this removes them: for every output ``dvc.lock`` records, staging folders whose process is gone.
"""

from __future__ import annotations

from pathlib import Path

from fersynth.atomic import clean_stale_staging, lock_outs


def sweep(root: Path) -> str | None:
    """Remove the stale staging folders beside every output of ``root/dvc.lock``; one line saying what went,
    or None when there was nothing."""
    removed = [entry for out in lock_outs(root) for entry in clean_stale_staging(root / out)]
    if not removed:
        return None
    names = ", ".join(str(entry.relative_to(root)) for entry in removed[:3])
    more = f" and {len(removed) - 3} more" if len(removed) > 3 else ""
    return f"fersynth warm: removed {len(removed)} staging folder(s) a killed stage left: {names}{more}"
