"""Atomic, refusing writes: build an output in a staging directory beside it, then swap it into place.

Three promises (docs/refusals.md, "What fersynth refuses and why"):

1. Nothing fersynth did not write is ever deleted. An existing output is replaced only when it is empty
   or is an earlier output of the same kind: a variant (``manifest.parquet``), demo data (its ground
   truth beside it) or a directory carrying fersynth's marker file (:data:`MARKER`, naming its kind).
   A path that is, or holds, the repository, ``.git``, ``.dvc`` or one of the stage's inputs is refused
   before any work (:class:`UnsafeOutput`).
2. A reader never sees a half state. The new directory and the old one are exchanged in one
   ``renameat2(RENAME_EXCHANGE)`` call (Linux); where the filesystem cannot, the old one is renamed
   aside, the new one in, and only then is the old one removed. Files are replaced by ``os.replace``.
3. A killed run leaves only a staging directory (``.<name>.fersynth-stage-<pid>-<random>``), which the
   next write of the same output removes (or, if the kill fell between the two renames of the
   fallback, restores the old output from).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fersynth.errors import UnsafeOutput
from fersynth.paths import ground_truth_path

MARKER = ".fersynth-output"  # inside directory outputs without a signature of their own: the kind, one word
DIRECTORY_KINDS = ("variant", "model", "export", "docs", "sheets", "demo", "predictions")
# a variant has its manifest; demo data no hidden files
MARKED_KINDS = ("model", "export", "docs", "sheets", "predictions")
FOLDER = "folder"  # for check_target only: a folder whose files are outputs, each checked as it is written
STAGING = "fersynth-stage"
PREVIOUS = ".fersynth-previous"  # the old output, inside a staging directory, while the fallback swaps
_LEGACY_STAGING = re.compile(r"[a-z0-9_]{8}")  # tempfile.mkdtemp's suffix, as fersynth used before markers


@contextmanager
def atomic_path(target: Path, kind: str = "file", inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield a staging path for ``target``; on success swap it into place.

    ``kind`` is ``file`` or one of :data:`DIRECTORY_KINDS`; ``inputs`` are the paths the stage reads
    (an output may not contain, equal or sit inside one). Whatever the caller creates at the yielded
    path replaces ``target`` as a whole, so a crash never leaves a half-written output behind.

    >>> with atomic_path(Path("models/gate"), kind="model") as tmp:  # doctest: +SKIP
    ...     tmp.mkdir(); (tmp / "config.json").write_text("{}")
    """
    if kind != "file" and kind not in DIRECTORY_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; known: file, {', '.join(DIRECTORY_KINDS)}")
    target = Path(target)
    check_target(target, kind, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{STAGING}-{os.getpid()}-", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if kind in MARKED_KINDS and staged.is_dir():
            (staged / MARKER).write_text(kind + "\n")
        check_target(target, kind, inputs)  # again: something may have appeared meanwhile
        _modes_from_umask(staged)
        _publish(staged, target, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_target(target: Path, kind: str, inputs: Iterable[Path] = ()) -> None:
    """Raise :class:`UnsafeOutput` unless writing ``target`` as ``kind`` can destroy nothing but an
    earlier output of the same kind. The CLI checks every output option with it before any work
    (:mod:`fersynth.options`), and :func:`atomic_path` again when it publishes; ``kind`` :data:`FOLDER`
    is a folder the files of a stage go into (``--plots-dir``), never replaced as a whole."""
    resolved = target.resolve()
    for root in _repository_roots():
        if resolved == root or root.is_relative_to(resolved):
            raise UnsafeOutput(f"refusing to write {target}: it is or contains the repository root {root}")
    project = _project_root_of(resolved)
    inside = resolved.relative_to(project).parts if project is not None else resolved.parts
    if ".git" in resolved.parts or ".dvc" in inside:
        raise UnsafeOutput(f"refusing to write {target}: it is inside .git or .dvc (Git's and DVC's own files)")
    if resolved.is_dir() and ((resolved / ".git").exists() or (resolved / ".dvc").is_dir()):
        raise UnsafeOutput(f"refusing to write {target}: it contains a repository (.git or .dvc)")
    for source in inputs:
        source_resolved = Path(source).resolve()
        if resolved == source_resolved or source_resolved.is_relative_to(resolved):
            raise UnsafeOutput(f"refusing to write {target}: it is or contains the input {source}")
        if resolved.is_relative_to(source_resolved):
            raise UnsafeOutput(f"refusing to write {target}: it is inside the input {source}")
    if not (target.exists() or target.is_symlink()):
        return
    if kind == FOLDER:
        if not target.is_dir():
            raise UnsafeOutput(f"refusing to write into {target}: it exists and is not a directory")
        return
    if kind == "file":
        if target.is_dir() and not target.is_symlink():
            raise UnsafeOutput(f"refusing to replace {target}: a file output cannot replace a directory")
        if project is not None and _tracked_but_no_stage_writes(project, "/".join(inside)):
            raise UnsafeOutput(
                f"refusing to replace {target}: Git tracks it and no stage of dvc.lock writes it "
                "(a project file, not an output); choose another path"
            )
        return
    if not target.is_dir():
        raise UnsafeOutput(f"refusing to replace {target}: it exists and is not a directory")
    found = output_kind(target)
    if found == kind or not any(target.iterdir()):
        return
    what = f"a fersynth {found} output" if found else "not a fersynth output"
    marker = {"variant": "manifest.parquet", "demo": "ground_truth/<name>.csv beside it"}.get(
        kind, f"{MARKER} marker '{kind}'"
    )
    raise UnsafeOutput(
        f"refusing to replace {target}: it is {what} (a {kind} output has {marker}); "
        "remove it yourself or choose another path"
    )


def _project_root_of(path: Path) -> Path | None:
    """The (resolved) project holding ``path``: a queued experiment's workspace under the main project's
    ``.dvc/tmp/exps/`` is its own project, so its outputs are not inside a ``.dvc``."""
    from fersynth.paths import find_project_root

    root = find_project_root(path.parent)
    root = root.resolve() if root is not None else None
    return root if root is not None and path.is_relative_to(root) else None


def _tracked_but_no_stage_writes(root: Path, relative: str) -> bool:
    """Whether ``relative`` (a posix path under project ``root``) is a file Git tracks (``dvc.yaml``,
    ``params.yaml``, a source file, the README) that no stage recorded in ``dvc.lock`` has as an output
    (``metrics/*.json``, tracked by Git with ``cache: false``, are outputs and may be replaced)."""
    if not (root / ".git").exists() or relative not in _git_files(root):
        return False
    return not any(relative == out or relative.startswith(f"{out}/") for out in _lock_outs_once(root))


@functools.cache
def _git_files(root: Path) -> frozenset[str]:
    """The files Git tracks under ``root`` (once per process: a stage replaces many)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, timeout=120, check=False)
    return frozenset(listed.stdout.decode(errors="replace").split("\0")) if listed.returncode == 0 else frozenset()


@functools.cache
def _lock_outs_once(root: Path) -> tuple[str, ...]:
    """:func:`lock_outs`, read once per process: a stage checks many targets against one lock."""
    return lock_outs(root)


def lock_outs(root: Path) -> tuple[str, ...]:
    """Every output path ``root/dvc.lock`` records (``foreach`` stages expanded, as DVC wrote them)."""
    from fersynth import dvclock

    lock = dvclock.read(root)
    return tuple(dvclock.outs(lock)) if lock is not None else ()


def output_kind(directory: Path) -> str | None:
    """The kind of fersynth output ``directory`` is, or None when fersynth did not write it."""
    marker = directory / MARKER
    if marker.is_file() and not marker.is_symlink():
        kind = marker.read_text(errors="replace").strip()
        return kind if kind in DIRECTORY_KINDS else None
    if (directory / "manifest.parquet").is_file():
        return "variant"
    if ground_truth_path(directory.parent, directory.name).is_file():
        return "demo"  # a demo dataset's native files: a marker in them would be read as a hidden file
    return None


def _repository_roots() -> set[Path]:
    from fersynth.paths import find_project_root, project_root

    roots = {project_root().resolve()}
    workspace = find_project_root(Path.cwd())
    if workspace is not None:
        roots.add(workspace.resolve())
    return roots


# publishing -----------------------------------------------------------------------------------
def _publish(staged: Path, target: Path, tmp: Path) -> None:
    if not (target.exists() or target.is_symlink()) or not staged.is_dir() or not target.is_dir():
        os.replace(staged, target)  # files, symlinks and new directories: one atomic rename
        return
    if _exchange(staged, target):  # staged now holds the old output
        return
    previous = tmp / PREVIOUS
    os.rename(target, previous)
    os.rename(staged, target)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(error, os.strerror(error), str(a), None, str(b))


# what a killed run left behind -----------------------------------------------------------------
def clean_stale_staging(target: Path) -> list[Path]:
    """Remove the staging directories of ``target`` whose process is gone; restore ``target`` from one
    if a kill fell between the fallback's two renames. Returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{STAGING}-(\d+)-[a-z0-9_]+")
    removed = []
    if not target.parent.is_dir():
        return removed
    for entry in sorted(target.parent.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        match = pattern.fullmatch(entry.name)
        if match and pid_alive(int(match.group(1))):
            continue
        if not match and not _is_legacy_staging(entry, target.name):
            continue
        previous = entry / PREVIOUS
        if previous.exists() and not (target.exists() or target.is_symlink()):
            os.rename(previous, target)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _is_legacy_staging(entry: Path, name: str) -> bool:
    """``.<name>.<8 random chars>`` holding nothing or only ``<name>``: what mkdtemp made before."""
    prefix = f".{name}."
    if not entry.name.startswith(prefix) or not _LEGACY_STAGING.fullmatch(entry.name[len(prefix) :]):
        return False
    return {child.name for child in entry.iterdir()} <= {name}


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (ours, or another user's). A zombie is not alive: it has
    exited and writes nothing more, though its pid stays taken until its parent reaps it (a killed process's
    orphans wait so until their new parent does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read(4096).rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (or it just exited): the signal probe said it exists


# small helpers ---------------------------------------------------------------------------------
def write_json(path: Path, payload: Any, sort_keys: bool = True) -> None:
    """``sort_keys=False`` keeps the payload's own order (a summary whose first key is the answer); the
    payload must then be built in a deterministic order."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=sort_keys, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


def _modes_from_umask(staged: Path) -> None:
    """Give every file and directory of an output the modes a plain ``open`` / ``mkdir`` gives under the
    process's umask: libraries that write through private temp files (safetensors: 0600; ``mkdtemp``: 0700)
    would otherwise publish outputs a teammate sharing the checkout cannot read. Execute bits are kept."""
    mask = _umask()
    if not staged.exists() or staged.is_symlink():
        return
    paths = [staged, *staged.rglob("*")] if staged.is_dir() else [staged]
    for path in paths:
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, 0o777 & ~mask)
        else:
            executable = path.stat().st_mode & 0o111
            os.chmod(path, (0o666 | executable) & ~mask)


def replace_project_file(path: Path, text: str) -> None:
    """Replace one of the project's own files (``params.yaml``, ``configs/*.yaml``, ``dvc.lock``, the
    committed plots template) atomically, temp file then rename, without the output rule: for fersynth's
    deliberate edits of those files only, never for a path an output option names."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        _modes_from_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
