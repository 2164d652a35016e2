"""A local MLflow tracking server for parallel and team runs: ``make mlflow-server`` (``fersynth mlflow-server``).

It starts PostgreSQL (a cluster of its own under ``.mlflow-server/pg``, listening on 127.0.0.1 and on a socket in
that folder; as root, run by an unprivileged user, since PostgreSQL refuses root) and ``mlflow server`` on
127.0.0.1 with that database as its store and ``.mlflow-server/artifacts`` as the destination of the artifacts it
proxies. Clients log to it with ``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>`` (:mod:`fersynth.tracking`).
Without PostgreSQL's programs, as root with apt-get, Debian's ``postgresql`` package is installed; where that
fails too, the same server keeps its runs in ``.mlflow-server/mlflow.db`` (sqlite) and says so in one line.

>>> with serve(port=0) as server:  # doctest: +SKIP
...     os.environ["MLFLOW_TRACKING_URI"] = server.uri
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fersynth.atomic import pid_alive, write_json
from fersynth.errors import FersynthError
from fersynth.log import get_logger
from fersynth.paths import MlflowServerLayout, mlflow_server_dir

DEFAULT_PORT = 5000
BACKENDS = ("auto", "postgresql", "sqlite")
DATABASE = "mlflow"  # the database, and the role that owns it
SERVICE_USERS = ("postgres", "nobody")  # who runs PostgreSQL when we are root, first that exists
START_TIMEOUT_S = 180  # mlflow server: imports and the first schema migration (~12 s on 2 cores)
SOCKET_PATH_MAX = 107  # sun_path; PostgreSQL refuses a longer socket path
INSTALL_TIMEOUT_S = 900

logger = get_logger(__name__)


class ServerError(FersynthError):
    """The server cannot start as asked: already running, port taken, PostgreSQL required but unavailable."""


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be used here; the message says why."""


@dataclass(frozen=True)
class Postgres:
    """A project-local PostgreSQL cluster, run by ``user`` (None: by us)."""

    bindir: str
    data: str
    user: str | None
    port: int

    def run(self, tool: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(self.bindir) / tool), *args], **as_user(self.user), capture_output=True, text=True, **kwargs
        )

    def stop(self) -> None:
        if (Path(self.data) / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")


@dataclass(frozen=True)
class Server:
    """A running server: its URI, its store, the pid of ``mlflow server`` and, when it uses one, its
    PostgreSQL; ``note`` says why it uses sqlite where PostgreSQL was wanted."""

    uri: str
    backend: str  # postgresql | sqlite
    backend_uri: str
    pid: int
    postgres: Postgres | None = None
    note: str | None = None

    @classmethod
    def read(cls, path: Path) -> Server:
        values = json.loads(Path(path).read_text())
        postgres = values.pop("postgres")
        return cls(**values, postgres=Postgres(**postgres) if postgres else None)


# PostgreSQL -------------------------------------------------------------------------------------------
def postgres_bindir() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``: on PATH, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin``; None when they are not installed."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).parent] if on_path else []
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    tools = ("initdb", "pg_ctl", "postgres")
    return next((c for c in candidates if all(os.access(c / t, os.X_OK) for t in tools)), None)


def install_postgres(log_path: Path) -> None:
    """``apt-get install postgresql`` (Debian's package), quietly, into ``log_path``; raises
    :class:`PostgresUnavailable` saying why it cannot."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("its programs are not installed (as root: apt-get install postgresql)")
    logger.info("installing Debian's postgresql package (apt-get, log in %s)", log_path)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    with open(log_path, "a") as log:
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
            try:
                done = subprocess.run(command, stdout=log, stderr=log, env=env, timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise PostgresUnavailable(f"`{' '.join(command)}` took over {INSTALL_TIMEOUT_S} s") from None
            if done.returncode != 0:
                raise PostgresUnavailable(f"`{' '.join(command)}` failed (exit {done.returncode}, see {log_path})")


def service_user() -> str | None:
    """Who runs PostgreSQL: None (ourselves) unless we are root, else the first of :data:`SERVICE_USERS`."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable(f"we are root and none of the users {', '.join(SERVICE_USERS)} exists to run it")


def as_user(name: str | None) -> dict:
    """``subprocess`` arguments that run a command as user ``name`` (None: as ourselves)."""
    if name is None:
        return {}
    entry = pwd.getpwnam(name)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}


def init_postgres(layout: MlflowServerLayout, bindir: Path, user: str | None) -> None:
    """Create the cluster once, with a role :data:`DATABASE` whose random password only we can read
    (``layout.postgres_password``, libpq's password file)."""
    folder = layout.postgres_dir
    for directory in (folder, layout.postgres_socket_dir):
        directory.mkdir(parents=True, exist_ok=True)
        if user is not None:
            shutil.chown(directory, user, pwd.getpwnam(user).pw_gid)
    if user is not None and subprocess.run(["test", "-w", str(folder)], **as_user(user)).returncode != 0:
        raise PostgresUnavailable(f"user {user} cannot reach {folder} (a parent folder is private): use --dir")
    if (layout.postgres_data / "PG_VERSION").exists():
        return
    password = secrets.token_urlsafe(24)
    layout.postgres_password.touch(mode=0o600)
    layout.postgres_password.write_text(f"*:*:*:{DATABASE}:{password}\n")
    password_file = folder / "initdb-password"
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    try:
        if user is not None:
            shutil.chown(password_file, user)
        cluster = Postgres(str(bindir), str(layout.postgres_data), user, 0)
        args = ("-D", cluster.data, "-U", DATABASE, "-A", "scram-sha-256", "-E", "UTF8", "--pwfile", str(password_file))
        done = cluster.run("initdb", *args)
    finally:
        password_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {done.stderr.strip()[-500:]}")


def start_postgres(layout: MlflowServerLayout, bindir: Path, user: str | None) -> tuple[Postgres, str]:
    """Start the cluster on a free loopback port, create the database if needed; returns it and the
    SQLAlchemy URI of the database (the password comes from ``PGPASSFILE``)."""
    init_postgres(layout, bindir, user)
    cluster = Postgres(str(bindir), str(layout.postgres_data), user, free_port())
    cluster.stop()  # one a killed server left running (its port is unknown now)
    socket_dir = layout.postgres_socket_dir
    # a socket path past sun_path's length makes PostgreSQL refuse to start: then TCP only
    sockets = str(socket_dir) if len(f"{socket_dir}/.s.PGSQL.{cluster.port}") <= SOCKET_PATH_MAX else ""
    options = f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {shlex.quote(sockets)}"
    done = cluster.run(
        "pg_ctl", "-D", cluster.data, "-l", str(layout.postgres_log), "-w", "-t", "60", "-o", options, "start"
    )
    if done.returncode != 0:
        log = layout.postgres_log.read_text(errors="replace")[-800:] if layout.postgres_log.exists() else ""
        raise PostgresUnavailable(f"pg_ctl start failed: {done.stderr.strip()[-300:]} {log}")
    try:
        _create_database(cluster.port, layout.postgres_password)
    except Exception:
        cluster.stop()
        raise
    logger.info("PostgreSQL %s on 127.0.0.1:%d (user %s, socket %s)", bindir, cluster.port, user, sockets or "none")
    return cluster, f"postgresql+psycopg2://{DATABASE}@127.0.0.1:{cluster.port}/{DATABASE}"


def _create_database(port: int, password_file: Path) -> None:
    import psycopg2

    connection = psycopg2.connect(
        host="127.0.0.1", port=port, user=DATABASE, dbname="postgres", passfile=str(password_file)
    )
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        connection.close()


def postgres_store(layout: MlflowServerLayout) -> tuple[Postgres, str]:
    """A started PostgreSQL and its URI, installing Debian's package first where that is needed and
    possible; raises :class:`PostgresUnavailable`."""
    try:
        import psycopg2  # noqa: F401  (mlflow server's driver for it)
    except ImportError:
        raise PostgresUnavailable("psycopg2 is not installed (requirements.lock: psycopg2-binary)") from None
    bindir = postgres_bindir()
    if bindir is None:
        install_postgres(layout.root / "apt-get.log")
        bindir = postgres_bindir()
    if bindir is None:
        raise PostgresUnavailable("apt-get installed postgresql, but initdb, pg_ctl and postgres are not found")
    return start_postgres(layout, bindir, service_user())


# mlflow server ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow(layout: MlflowServerLayout, backend_uri: str, port: int, workers: int) -> subprocess.Popen:
    """``mlflow server`` in a session of its own (we stop it, after its requests, before its database)."""
    layout.artifacts.mkdir(parents=True, exist_ok=True)
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
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            raise ServerError(f"mlflow server exited with status {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise ServerError(f"mlflow server did not answer {uri}/health within {timeout:.0f} s (log: {log})")


def _is_mlflow_server(pid: int) -> bool:
    try:
        return pid_alive(pid) and b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def start(root: Path | None = None, port: int = DEFAULT_PORT, backend: str = "auto", workers: int = 2) -> Server:
    """Start the server (``port`` 0: a free one) with its state under ``root`` (default ``.mlflow-server/``);
    ``backend``: auto (PostgreSQL, else sqlite), postgresql or sqlite. Stop it with :func:`stop`."""
    if backend not in BACKENDS:
        raise ServerError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    layout = MlflowServerLayout(Path(root or mlflow_server_dir()).resolve())
    if layout.state.exists():
        running = Server.read(layout.state)
        if _is_mlflow_server(running.pid):
            raise ServerError(f"already running at {running.uri} (fersynth mlflow-server stop)")
        stop(layout.root)  # what a killed server left: its PostgreSQL may still run
    port = port or free_port()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise ServerError(f"port {port} on 127.0.0.1 is taken: choose another with --port")
    layout.root.mkdir(parents=True, exist_ok=True)
    postgres, note = None, None
    if backend != "sqlite":
        try:
            postgres, backend_uri = postgres_store(layout)
        except PostgresUnavailable as error:
            if backend == "postgresql":
                raise ServerError(f"PostgreSQL unavailable: {error}") from None
            note = str(error)
            logger.warning("PostgreSQL unavailable (%s): the server keeps its runs in sqlite instead", note)
    if postgres is None:
        backend_uri = f"sqlite:///{layout.sqlite_db}"
    uri = f"http://127.0.0.1:{port}"
    server = Server(uri, "postgresql" if postgres else "sqlite", backend_uri, 0, postgres, note)
    write_json(layout.state, asdict(server))  # before mlflow starts: `stop` also stops a half-started one
    process = start_mlflow(layout, backend_uri, port, workers)
    server = Server(uri, server.backend, backend_uri, process.pid, postgres, note)
    write_json(layout.state, asdict(server))
    try:
        wait_healthy(uri, process, layout.server_log)
    except BaseException:
        stop(layout.root)
        raise
    logger.info("mlflow server at %s: store %s, artifacts %s", uri, server.backend, layout.artifacts)
    return server


def stop(root: Path | None = None) -> bool:
    """Stop the server whose state is under ``root`` (``mlflow server`` first, then its PostgreSQL); False
    when nothing was running there."""
    layout = MlflowServerLayout(Path(root or mlflow_server_dir()).resolve())
    if not layout.state.exists():
        return False
    server = Server.read(layout.state)
    # first: a foreground `start` whose server ends now knows it was stopped, not that it died
    layout.state.unlink(missing_ok=True)
    if server.pid and _is_mlflow_server(server.pid):
        _terminate_group(server.pid)
    if server.postgres is not None:
        server.postgres.stop()
    return True


def _terminate_group(pid: int, grace_s: float = 20) -> None:
    """SIGTERM to the server's session (mlflow server and its uvicorn workers), SIGKILL to what is left after
    ``grace_s``; returns once the whole session is gone, so the database sees no client when it stops."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.1)
    if _group_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5  # bounded: a zombie nobody reaps stays in its group
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)


def _group_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # a server we started ourselves is our child: reap it, or it stays a zombie
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def wait_then_stop(server: Server, root: Path | None = None) -> int:
    """In the foreground: wait for Ctrl-C, SIGTERM, ``fersynth mlflow-server stop`` from elsewhere or the
    server's end, then stop it and its database. Returns the exit status (1: the server died by itself)."""
    layout = MlflowServerLayout(Path(root or mlflow_server_dir()).resolve())

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
    if not layout.state.exists():
        return 0  # `fersynth mlflow-server stop` stopped it
    logger.error("the mlflow server ended by itself (log: %s)", layout.server_log)
    stop(layout.root)
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
