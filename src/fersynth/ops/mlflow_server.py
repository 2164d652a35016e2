"""A local MLflow tracking server for parallel and team runs: ``make mlflow-server`` (``fersynth mlflow-server``).

It starts PostgreSQL (:mod:`fersynth.ops.postgres`, a cluster of its own under ``.mlflow-server/pg``) and ``mlflow
server`` on 127.0.0.1 with that database as its store and ``.mlflow-server/artifacts`` as the destination of the
artifacts it proxies. Clients log to it with ``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``
(:mod:`fersynth.tracking`). Where PostgreSQL's programs are not installed (``--install-postgres``: as root,
apt-get installs Debian's package), the same server keeps its runs in ``.mlflow-server/mlflow.db`` (sqlite) and
says so in one line; any other PostgreSQL failure is an error.

>>> with serve(port=0) as server:  # doctest: +SKIP
...     os.environ["MLFLOW_TRACKING_URI"] = server.uri
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from filelock import FileLock, Timeout

from fersynth.atomic import write_json
from fersynth.log import get_logger
from fersynth.ops.postgres import (
    Postgres,
    PostgresMissing,
    ServerError,
    free_port,
    make_dirs,
    one_line,
    prepare_postgres,
    start_postgres,
)
from fersynth.paths import MlflowServerLayout, mlflow_server_dir

__all__ = ["BACKENDS", "DEFAULT_PORT", "Server", "ServerError", "serve", "start", "stop", "wait_then_stop"]

DEFAULT_PORT = 5000
BACKENDS = ("auto", "postgresql", "sqlite")
START_TIMEOUT_S = 180  # mlflow server: imports and the first schema migration (~12 s on 2 cores)
STOP_LOCK_TIMEOUT_S = START_TIMEOUT_S + 120  # a `stop` beside a `start`: waits until the start is done

logger = get_logger(__name__)


@dataclass(frozen=True)
class Server:
    """A running server: its URI, its store, the pid of ``mlflow server`` (the leader of its process group:
    its uvicorn workers outlive it when it is killed) and, when it uses one, its PostgreSQL; ``note`` says why
    it uses sqlite where PostgreSQL was wanted."""

    uri: str
    backend: str  # postgresql | sqlite
    backend_uri: str
    pid: int
    postgres: Postgres | None = None
    note: str | None = None

    @classmethod
    def read(cls, path: Path) -> Server:
        try:
            values = json.loads(Path(path).read_text())
            postgres = values.pop("postgres")
            return cls(**values, postgres=Postgres(**postgres) if postgres else None)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ServerError(
                f"{path} is not a server's state ({one_line(error, 120)}): if no server runs there, delete it"
            ) from None


@contextmanager
def _user_errors(layout: MlflowServerLayout) -> Iterator[None]:
    """Errors of the folder, its files and the database as :class:`ServerError` (one line, no traceback)."""
    try:
        yield
    except (OSError, ValueError) as error:
        raise ServerError(f"{layout.root}: {type(error).__name__}: {one_line(error)}") from error
    except Exception as error:
        if not type(error).__module__.startswith("psycopg2"):
            raise
        raise ServerError(f"PostgreSQL: {one_line(error)}") from error


@contextmanager
def _folder_lock(layout: MlflowServerLayout, timeout: float) -> Iterator[None]:
    """One ``start`` or ``stop`` at a time on a folder (two starts would run two servers)."""
    try:
        with FileLock(layout.lock, timeout=timeout):
            yield
    except Timeout:
        raise ServerError(
            f"another `fersynth mlflow-server start` or `stop` is at work on {layout.root} (lock: {layout.lock})"
        ) from None


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """A second Ctrl-C while stopping would leave PostgreSQL running with nothing naming it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def _layout(root: Path | None) -> MlflowServerLayout:
    return MlflowServerLayout(Path(root or mlflow_server_dir()).resolve())


# mlflow server ----------------------------------------------------------------------------------------
def start_mlflow(layout: MlflowServerLayout, backend_uri: str, port: int, workers: int) -> subprocess.Popen:
    """``mlflow server`` in a session of its own (we stop it, after its requests, before its database)."""
    make_dirs(layout.artifacts)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri]
    command += ["--artifacts-destination", str(layout.artifacts), "--serve-artifacts"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    env = os.environ | {
        "PGPASSFILE": str(layout.postgres_password),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # GenAI evaluation and prompt jobs: eight more worker processes, which fersynth never uses
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(layout.server_log, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=layout.root, start_new_session=True)


def wait_healthy(uri: str, process: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    offset = log.stat().st_size if log.exists() else 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if "address already in use" in log.read_text(errors="replace")[offset:].lower():
                raise ServerError(f"{uri} is taken (by a process that is not listening yet): choose another --port")
            raise ServerError(f"mlflow server exited with status {process.returncode}: {_why_it_ended(log, offset)}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise ServerError(f"mlflow server did not answer {uri}/health within {timeout:.0f} s (log: {log})")


def _why_it_ended(log: Path, offset: int) -> str:
    """The last error line this start wrote to the server's log, and where the log is."""
    with contextlib.suppress(OSError), open(log, "rb") as file:
        file.seek(offset)
        lines = [line.strip() for line in file.read().decode(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line] or lines
        if errors:
            return f"{one_line(errors[-1], 200)} (log: {log})"
    return f"see {log}"


def _group_members(pgid: int) -> dict[int, str]:
    """pid -> state letter of each process of group ``pgid``, from ``/proc/<pid>/stat``."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                members[int(stat.parent.name)] = fields[0]
    return members


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` (the server's session: mlflow server, its uvicorn workers) lives;
    zombies do not count (an init that does not reap would keep them for ever)."""
    if pgid <= 0 or pgid == os.getpgrp():
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)  # a server we started ourselves is our child: reap it, or it stays a zombie
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(state != "Z" for state in _group_members(pgid).values())


def _is_server_group(pgid: int, layout: MlflowServerLayout) -> bool:
    """Whether group ``pgid`` lives and is the server's: one of its processes works in the server's folder
    (``mlflow server`` starts there, its workers inherit it), so a pid the system gave again is left alone."""
    if not _group_alive(pgid):
        return False
    for pid, state in _group_members(pgid).items():
        try:
            if state != "Z" and Path(os.readlink(f"/proc/{pid}/cwd")).resolve() == layout.root:
                return True
        except PermissionError:
            return True  # another user's process of that group: not ours to judge, `stop` will say
        except OSError:
            continue
    return False


def _terminate_group(pgid: int, grace_s: float = 20) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after ``grace_s``; returns once the
    whole group is gone, so the database sees no client when it stops."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5  # bounded: a zombie nobody reaps stays in its group
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT does not count
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def start(
    root: Path | None = None,
    port: int = DEFAULT_PORT,
    backend: str = "auto",
    workers: int = 2,
    install_postgres: bool = False,
) -> Server:
    """Start the server (``port`` 0: a free one) with its state under ``root`` (default ``.mlflow-server/``);
    ``backend``: auto (PostgreSQL, else sqlite where its programs are missing), postgresql or sqlite;
    ``install_postgres``: as root, apt-get installs them where missing. Stop it with :func:`stop`."""
    if backend not in BACKENDS:
        raise ServerError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    layout = _layout(root)
    with _user_errors(layout):
        make_dirs(layout.root)
        with _folder_lock(layout, timeout=0):
            return _start(layout, port, backend, workers, install_postgres)


def _start(layout: MlflowServerLayout, port: int, backend: str, workers: int, install: bool) -> Server:
    if layout.state.exists():
        running = Server.read(layout.state)
        if _is_server_group(running.pid, layout):
            raise ServerError(f"already running at {running.uri} (fersynth mlflow-server stop --dir {layout.root})")
        _stop(layout, running)  # what a killed server left: its PostgreSQL may still run
    port = port or free_port()
    if _port_taken(port):
        raise ServerError(f"port {port} on 127.0.0.1 is taken: choose another with --port")
    uri = f"http://127.0.0.1:{port}"
    server, process = Server(uri, "sqlite", f"sqlite:///{layout.sqlite_db}", 0), None
    try:
        if backend != "sqlite":
            server = _with_postgres(layout, server, backend, install)
        process = start_mlflow(layout, server.backend_uri, port, workers)
        server = Server(uri, server.backend, server.backend_uri, process.pid, server.postgres, server.note)
        write_json(layout.state, asdict(server))
        wait_healthy(uri, process, layout.server_log)
    except BaseException:
        # Ctrl-C or an error half-way: stop what was started (PostgreSQL, the server), then tell
        started = Server.read(layout.state) if layout.state.exists() else server
        _stop(layout, replace(started, pid=process.pid) if process is not None else started)
        raise
    logger.info("mlflow server at %s: store %s, artifacts %s", uri, server.backend, layout.artifacts)
    return server


def _with_postgres(layout: MlflowServerLayout, server: Server, backend: str, install: bool) -> Server:
    """``server`` on a started PostgreSQL; on sqlite with a note where ``backend`` is auto and PostgreSQL is
    not installed."""
    try:
        cluster = prepare_postgres(layout, install)
    except PostgresMissing as error:
        if backend == "postgresql":
            raise ServerError(f"PostgreSQL unavailable: {error}") from None
        logger.warning("PostgreSQL unavailable (%s): the server keeps its runs in sqlite instead", error)
        return Server(server.uri, "sqlite", server.backend_uri, 0, None, str(error))
    # named before pg_ctl starts it: a start interrupted from here on, or killed, is stopped by `stop`
    server = Server(server.uri, "postgresql", "", 0, cluster)
    write_json(layout.state, asdict(server))
    backend_uri = start_postgres(cluster, layout)
    return Server(server.uri, "postgresql", backend_uri, 0, cluster)


def stop(root: Path | None = None) -> bool:
    """Stop the server whose state is under ``root`` (its process group first, then its PostgreSQL); False
    when nothing was running there."""
    layout = _layout(root)
    with _user_errors(layout):
        if not layout.state.exists():
            return False
        with _folder_lock(layout, timeout=STOP_LOCK_TIMEOUT_S):
            if not layout.state.exists():
                return False  # a stop beside us came first
            _stop(layout, Server.read(layout.state))
    return True


def _stop(layout: MlflowServerLayout, server: Server) -> None:
    """Stop the server's group and its PostgreSQL, then forget the state: the state goes last, so whatever
    interrupts a stop leaves it naming what still runs."""
    with _sigint_ignored():
        if _is_server_group(server.pid, layout):
            _terminate_group(server.pid)
        if server.postgres is not None:
            server.postgres.stop()
        layout.state.unlink(missing_ok=True)


def wait_then_stop(server: Server, root: Path | None = None) -> int:
    """In the foreground: wait for Ctrl-C, SIGTERM, ``fersynth mlflow-server stop`` from elsewhere or the
    server's end, then stop it and its database. Returns the exit status (1: the server died by itself)."""
    layout = _layout(root)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C also where the shell started us with SIGINT ignored (`make mlflow-server &`)
    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        os.waitpid(server.pid, 0)  # our child: start() launched it
    except KeyboardInterrupt:
        logger.info("stopping the mlflow server at %s", server.uri)
        stop(layout.root)
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # a `stop` from elsewhere holds the lock until it has stopped everything and removed the state
    with _user_errors(layout), _folder_lock(layout, timeout=STOP_LOCK_TIMEOUT_S):
        if not layout.state.exists():
            return 0
        logger.error("the mlflow server ended by itself (log: %s)", layout.server_log)
        _stop(layout, Server.read(layout.state))
    return 1


@contextmanager
def serve(
    root: Path | None = None, port: int = DEFAULT_PORT, backend: str = "auto", workers: int = 2
) -> Iterator[Server]:
    """:func:`start`, and :func:`stop` on the way out (also on Ctrl-C)."""
    server = start(root, port, backend, workers)
    try:
        yield server
    finally:
        stop(root)
