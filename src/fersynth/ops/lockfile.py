"""A `dvc.lock` that a kill left empty or cut short, put back before `fersynth warm` runs the next command.

DVC 3.67 rewrites `dvc.lock` in place after every stage; a SIGKILL in that window (a few hundred ms per stage)
leaves it empty or truncated, and every later `dvc status` / `dvc repro` fails on it. fersynth cannot change
how DVC writes it, so `fersynth warm` (what `make repro` runs) keeps a copy of the last valid lock and, when it
finds the lock broken at start, restores the newest valid one it has: that copy, else the one in git's index.
DVC then re-runs (or restores from its run-cache) whatever ran after that lock was written: nothing is lost
but time, and the one line it prints says so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from fersynth import dvclock
from fersynth.atomic import replace_project_file
from fersynth.dvclock import MAX_BYTES

LOCK = dvclock.NAME
COPY = Path(".cache") / "dvc.lock.last-valid"  # .cache/ is git-ignored and fersynth's own


def guard(root: Path) -> str | None:
    """Check ``root/dvc.lock``: a valid one is copied to :data:`COPY` (the next run's fallback); a broken
    one is replaced by that copy or by git's index and the returned line says which; None when there is no
    lock or nothing was wrong."""
    lock = root / LOCK
    if not lock.is_file() or lock.is_symlink():
        return None
    problem = _problem(lock.read_bytes() if lock.stat().st_size <= MAX_BYTES else None)
    if problem is None:
        (root / COPY).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lock, root / COPY)
        return None
    copy = root / COPY
    if copy.is_file() and _problem(copy.read_bytes()) is None:
        replace_project_file(lock, copy.read_text())
        source = f"the copy {COPY} taken before the last run"
    elif (committed := _from_git_index(root)) is not None:
        replace_project_file(lock, committed)
        source = "git's index"
    else:
        return (
            f"fersynth warm: {LOCK} is {problem} (a killed `dvc repro`?) and no valid copy exists: "
            f"restore it with `git checkout {LOCK}`"
        )
    return (
        f"fersynth warm: {LOCK} was {problem} (a killed `dvc repro`); restored it from {source}: stages that "
        "ran after it re-run or come from DVC's run-cache"
    )


def _problem(data: bytes | None) -> str | None:
    """Why ``data`` is not a usable lock file, or None."""
    if data is None:
        return f"larger than {MAX_BYTES >> 20} MB"
    if not data.strip():
        return "empty"
    try:
        parsed = dvclock.parse(data)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return "not valid YAML (cut short)"
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA  # DVC's own check of what it reads
    from voluptuous import Invalid

    try:
        COMPILED_LOCKFILE_SCHEMA(parsed)
    except Invalid:
        return "not a valid DVC lock file (cut short)"
    return None


def _from_git_index(root: Path) -> str | None:
    try:
        shown = subprocess.run(["git", "show", f":{LOCK}"], cwd=root, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if shown.returncode != 0 or _problem(shown.stdout) is not None:
        return None
    return shown.stdout.decode()
