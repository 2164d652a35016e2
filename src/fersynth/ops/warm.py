"""A warm fersynth for long command runs: ``fersynth warm -- dvc repro``.

A pipeline run starts ~65 ``fersynth`` processes, and most of their time is spent importing the same
libraries: PyTorch (with the ``torch._dynamo`` that every optimizer pulls in), MLflow, scikit-learn and
Great Expectations take 2-4 s per stage on 2 CPU cores, more than many stages compute. ``fersynth warm``
starts one server (:mod:`~fersynth.ops.warm_server`, in its own session) that imports those libraries once, runs
the given command with ``FERSYNTH_WARM`` naming the server's socket, and stops the server afterwards. Each
``fersynth`` command started meanwhile (by DVC, by hand) hands its arguments, ``argv[0]``, ``sys.path``, working
directory, environment, umask, ignored signals, resource limits, nice value and standard streams to the server
(:mod:`~fersynth.ops.warm_client`), which forks a worker (:mod:`~fersynth.ops.warm_worker`) that becomes that
process and runs the command; the worker's exit status (code or signal) comes back to the caller.

What keeps a warm run equal to a cold one:
- The server imports third-party libraries only, and every worker imports fersynth itself from disk,
  so an edited stage is never served from a stale copy. The server never computes (no PyTorch op, no
  database connection); its only threads at fork time are the idle pools native libraries start at load
  (OpenBLAS, jemalloc), which handle fork themselves, as in any forked DataLoader worker.
- Settings that libraries read once, at import (``OMP_*``, ``TORCH*``, ``SKLEARN_*``, ``TQDM_*``, locale,
  ``PYTHON*``, interpreter flags, CPU affinity, ...), and the sandbox a process runs in (namespaces, cgroup,
  capabilities, seccomp) must match the server's (:mod:`~fersynth.ops.warm_compat`); a caller whose settings
  differ is told to start cold, with the reason. A worker takes its caller's resource limits, nice value and
  OOM score (:mod:`~fersynth.ops.warm_limits`); a caller asking for more than the server could give (a hard limit
  above the server's) starts cold. Random generators seeded at import (PyTorch, NumPy) are re-seeded in each
  worker.
- A worker exits as a new process does (threads joined, atexit callbacks run, streams flushed) but
  without finalising the server's modules, and the server reports its status only after reaping it, so
  DVC never hashes half-written outputs.
- A worker never outlives what DVC watches: Ctrl-C and termination reach it through its caller; a caller that
  vanishes (SIGKILL) takes its worker with it; a server that dies (SIGKILL, OOM) takes its workers with it, and
  their callers report failure only once the workers are gone; when the command ends (or `fersynth warm` is
  terminated) workers still running get SIGTERM, as a cold stage would, so their MLflow runs end KILLED, then
  SIGKILL after 10 s, and the server reaps every one before it exits. Without a server, or when it cannot be
  reached in time, ``fersynth`` starts cold, as always; a command is never run twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fersynth.atomic import pid_alive
from fersynth.ops.warm_wire import COLD_NOTES, COLD_WHILE_LOADING_ENV, ENV, READY, beside

WORKDIR_PREFIX = "fersynth-warm-"  # + the caller's pid + mkdtemp's suffix: the server's private folder
PIDS = "pids"  # in that folder: the caller's and the server's pid, for the sweep after a kill
STATS = "stats.json"
WORKDIR_FILES = frozenset({"socket", PIDS, STATS, READY, COLD_NOTES})  # all a run ever writes there


def run_warm(command: list[str], entry: str, cold_while_loading: bool = False) -> int:
    """Start a server in a new interpreter and session, run ``command`` with ``$FERSYNTH_WARM`` set (Ctrl-C
    reaches it from the terminal, termination is passed on), stop the server, say how many fersynth
    commands ran warm; the command's exit status, 128 + N for a signal N. ``entry``: the click entry point
    the server's workers run, ``"module:attribute"`` (the caller's own, ``"fersynth.cli:main"``).
    ``cold_while_loading``: commands started before the server has imported everything run cold beside it
    instead of waiting (the first stage of a `dvc repro` overlaps the server's ~7 s of imports on a second
    core)."""
    _guard_lockfile()  # a lock a killed `dvc repro` left empty is restored before DVC reads it
    _sweep_workdirs()
    prefix = f"{WORKDIR_PREFIX}{os.getpid()}-"
    workdir = tempfile.mkdtemp(prefix=prefix)
    if len(workdir) > 90:  # a unix socket path holds ~107 bytes; a long TMPDIR would not fit
        shutil.rmtree(workdir)
        workdir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    address = os.path.join(workdir, "socket")
    stats_path = os.path.join(workdir, STATS)
    server = subprocess.Popen(
        [sys.executable, "-m", "fersynth.ops.warm_server", address, entry, stats_path],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    with open(os.path.join(workdir, PIDS), "w", encoding="utf-8") as pids:
        pids.write(f"{os.getpid()} {server.pid}\n")
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous = {}
    try:
        for _ in range(500):  # the socket is bound before the imports: milliseconds
            if os.path.exists(address) or server.poll() is not None:
                break
            time.sleep(0.01)
        env = dict(os.environ)
        if server.poll() is None:
            env[ENV] = address
            if cold_while_loading:
                env[COLD_WHILE_LOADING_ENV] = "1"
        try:
            child = subprocess.Popen(command, env=env)
        except OSError as error:
            print(f"fersynth warm: error: cannot run {command[0]}: {error.strerror}", file=sys.stderr)
            return 127
        # like a shell waiting for a foreground job: Ctrl-C goes to the job from the terminal, not to us
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        for signum in forwarded:
            previous[signum] = signal.signal(signum, lambda signum, _frame: child.send_signal(signum))
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        counts = _read_stats(stats_path)
        early = _read_lines(beside(address, COLD_NOTES))
        if counts is None and early:  # stopped before it could serve: every command ran cold, and we know why
            counts = {"warm": 0, "cold_reasons": {}}
        if counts is not None and early:
            counts["cold_reasons"]["server still loading"] = len(early)
        shutil.rmtree(workdir, ignore_errors=True)
        _say(counts)
        _guard_lockfile()  # keeps the new lock as the next run's fallback, or repairs one a signal cut short
    return 128 - code if code < 0 else code


def _guard_lockfile() -> None:
    from fersynth.ops import staging
    from fersynth.ops.lockfile import guard
    from fersynth.paths import find_project_root

    root = find_project_root(Path.cwd())
    for message in (guard(root), staging.sweep(root)) if root is not None else ():
        if message:
            print(message, file=sys.stderr)


def stale_workdirs(parents: tuple[str, ...] | None = None) -> list[str]:
    """The private folders of `fersynth warm` runs that were killed (a SIGKILL leaves no chance to remove them) in
    ``parents`` (the temp folder and /tmp): a folder, not a link, of this user, named as :func:`run_warm` names
    them, holding only what a run writes there, and every process it names (caller, server) gone."""
    parents = parents or tuple(dict.fromkeys((tempfile.gettempdir(), "/tmp")))
    found = []
    for parent in parents:
        try:
            with os.scandir(parent) as entries:
                found += [entry.path for entry in entries if _is_stale(entry)]
        except OSError:
            continue
    return found


def _is_stale(entry: os.DirEntry) -> bool:
    match = re.fullmatch(rf"{WORKDIR_PREFIX}(\d+)-\w+", entry.name)
    if match is None:
        return False
    try:
        info = entry.stat(follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        if not set(os.listdir(entry.path)) <= WORKDIR_FILES:
            return False  # something a run does not write: not ours to remove
        pids = _read_pids(os.path.join(entry.path, PIDS))
    except (OSError, ValueError):
        return False
    return not any(pid_alive(pid) for pid in [int(match.group(1)), *pids])


def _read_pids(path: str) -> list[int]:
    """The pids a run wrote (none when it was killed before writing them: its folder's name holds the caller's);
    a FIFO or a link raises (ValueError, OSError): such a folder is left alone; at most 64 bytes are read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError(f"{path} is not a regular file")
        return [int(pid) for pid in handle.read(64).split()]


def _sweep_workdirs() -> None:
    removed = stale_workdirs()
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    if removed:
        names = ", ".join(removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        print(f"fersynth warm: removed {len(removed)} folder(s) that killed runs left: {names}", file=sys.stderr)


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except OSError:
        return []


def _read_stats(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _say(counts: dict | None) -> None:
    if counts is None:
        print("fersynth warm: the server did not report; commands may have run cold", file=sys.stderr)
        return
    reasons = "".join(f"; {count} cold: {reason}" for reason, count in sorted(counts["cold_reasons"].items()))
    for kind in ("stopped", "killed"):
        reasons += "".join(f"; {count} {kind}: {reason}" for reason, count in sorted(counts.get(kind, {}).items()))
    print(f"fersynth warm: {counts['warm']} command(s) ran warm{reasons}", file=sys.stderr)
