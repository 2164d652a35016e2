"""The project-local PostgreSQL cluster behind the local MLflow tracking server (:mod:`fersynth.ops.mlflow_server`).

A cluster of its own under ``.mlflow-server/pg``, listening on 127.0.0.1 and on a socket in that folder; as root it
is run by an unprivileged user, since PostgreSQL refuses root. Debian's ``postgresql`` package is installed only
when asked (``--install-postgres``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fersynth.errors import FersynthError
from fersynth.log import get_logger
from fersynth.paths import MlflowServerLayout

DATABASE = "mlflow"  # the database, and the role that owns it
SERVICE_USERS = ("postgres", "nobody")  # who runs PostgreSQL when we are root, first that exists
SOCKET_PATH_MAX = 107  # sun_path, in bytes; PostgreSQL refuses a longer socket path
INSTALL_TIMEOUT_S = 900
STOP_TIMEOUT_S = 60

logger = get_logger(__name__)


class ServerError(FersynthError):
    """The server cannot start or stop as asked: already running, port taken, PostgreSQL failed."""


class PostgresMissing(ServerError):
    """PostgreSQL's programs (or its Python driver) are not installed; the message says what to do."""


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

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid`` while that process lives, else None."""
        try:
            pid = int((Path(self.data) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def stop(self) -> None:
        """Stop the cluster (fast shutdown) if it runs; raises :class:`ServerError` when it keeps running."""
        if self.postmaster_pid() is None:
            return
        done = self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", str(STOP_TIMEOUT_S), "stop")
        if done.returncode == 0 or self.postmaster_pid() is None:
            return
        # pg_ctl refused (e.g. as root, for a cluster a user started): SIGINT is the same fast shutdown
        pid = self.postmaster_pid()
        logger.warning("pg_ctl stop failed (%s): sending SIGINT to postgres %s", one_line(done.stderr), pid)
        try:
            os.kill(pid, signal.SIGINT)
        except (ProcessLookupError, TypeError):
            return
        except PermissionError:
            raise ServerError(f"cannot stop PostgreSQL (pid {pid}) of {self.data}: it runs as another user") from None
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and self.postmaster_pid() is not None:
            time.sleep(0.2)
        if self.postmaster_pid() is not None:
            raise ServerError(f"PostgreSQL (pid {pid}) of {self.data} did not stop within {STOP_TIMEOUT_S} s")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` as one line of at most ``limit`` characters (its end: where errors say what went wrong)."""
    words = " ".join(str(text).split())
    return (words[-limit:] if len(words) > limit else words) or "no message"


def make_dirs(path: Path) -> None:
    """``mkdir -p`` with the folders it creates readable by all (0755, whatever the umask): PostgreSQL's user
    must reach the ones under them."""
    missing = []
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        folder.chmod(0o755)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by us only (0600)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)


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
    :class:`ServerError` saying why it cannot."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServerError("--install-postgres needs root and apt-get")
    logger.info("installing Debian's postgresql package (apt-get, log in %s)", log_path)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    with open(log_path, "a") as log:
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
            try:
                done = subprocess.run(command, stdout=log, stderr=log, env=env, timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise ServerError(f"`{' '.join(command)}` took over {INSTALL_TIMEOUT_S} s") from None
            if done.returncode != 0:
                raise ServerError(f"`{' '.join(command)}` failed (exit {done.returncode}, see {log_path})")


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
    raise ServerError(f"we are root and none of the users {', '.join(SERVICE_USERS)} exists to run PostgreSQL")


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
        make_dirs(directory)
        if user is not None:
            shutil.chown(directory, user, pwd.getpwnam(user).pw_gid)
    if user is not None and subprocess.run(["test", "-w", str(folder)], **as_user(user)).returncode != 0:
        raise ServerError(f"PostgreSQL's user {user} cannot reach {folder} (a parent folder is private): use --dir")
    if (layout.postgres_data / "PG_VERSION").exists():
        if not layout.postgres_password.exists():
            raise ServerError(
                f"{layout.postgres_password} is missing, so the cluster in {layout.postgres_data} cannot be used: "
                "remove that folder (its runs are lost) or restore the file"
            )
        return
    password = secrets.token_urlsafe(24)
    write_private(layout.postgres_password, f"*:*:*:{DATABASE}:{password}\n")
    password_file = layout.postgres_initdb_password
    write_private(password_file, password + "\n")
    try:
        if user is not None:
            shutil.chown(password_file, user)
        cluster = Postgres(str(bindir), str(layout.postgres_data), user, 0)
        args = ("-D", cluster.data, "-U", DATABASE, "-A", "scram-sha-256", "-E", "UTF8", "--pwfile", str(password_file))
        done = cluster.run("initdb", *args)
    finally:
        password_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ServerError(f"initdb failed: {one_line(done.stderr)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare_postgres(layout: MlflowServerLayout, install: bool) -> Postgres:
    """The cluster, created if needed, on a free loopback port, not started yet; installs Debian's package
    first when ``install`` and its programs are missing. Raises :class:`PostgresMissing` or
    :class:`ServerError`."""
    try:
        import psycopg2  # noqa: F401  (mlflow server's driver for it)
    except ImportError:
        raise PostgresMissing("psycopg2 is not installed (requirements.lock: psycopg2-binary)") from None
    bindir = postgres_bindir()
    if bindir is None and install:
        install_postgres(layout.apt_log)
        bindir = postgres_bindir()
        if bindir is None:
            raise ServerError("apt-get installed postgresql, but initdb, pg_ctl and postgres are not found")
    if bindir is None:
        raise PostgresMissing(
            "its programs are not installed (as root: fersynth mlflow-server start --install-postgres)"
        )
    user = service_user()
    init_postgres(layout, bindir, user)
    cluster = Postgres(str(bindir), str(layout.postgres_data), user, free_port())
    cluster.stop()  # one a killed server left running (its port is unknown now)
    return cluster


def start_postgres(cluster: Postgres, layout: MlflowServerLayout) -> str:
    """Start ``cluster`` and create the database if needed; returns the SQLAlchemy URI of the database (the
    password comes from ``PGPASSFILE``)."""
    socket_dir = layout.postgres_socket_dir
    # a socket path past sun_path's length makes PostgreSQL refuse to start: then TCP only
    socket_path = socket_dir / f".s.PGSQL.{cluster.port}"
    sockets = str(socket_dir) if len(os.fsencode(socket_path)) <= SOCKET_PATH_MAX else ""
    options = f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {shlex.quote(sockets)}"
    done = cluster.run(
        "pg_ctl", "-D", cluster.data, "-l", str(layout.postgres_log), "-w", "-t", "60", "-o", options, "start"
    )
    if done.returncode != 0:
        raise ServerError(f"pg_ctl start failed: {one_line(done.stderr or done.stdout)} (log: {layout.postgres_log})")
    _create_database(cluster.port, layout.postgres_password)
    logger.info(
        "PostgreSQL %s on 127.0.0.1:%d (user %s, socket %s)",
        cluster.bindir,
        cluster.port,
        cluster.user,
        sockets or "none",
    )
    return f"postgresql+psycopg2://{DATABASE}@127.0.0.1:{cluster.port}/{DATABASE}"


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
