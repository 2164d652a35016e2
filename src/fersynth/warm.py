"""A warm fersynth for long command runs: ``fersynth warm -- dvc repro``.

A pipeline run starts ~65 ``fersynth`` processes, and most of their time is spent importing the same
libraries: PyTorch (with the ``torch._dynamo`` that every optimizer pulls in), MLflow, scikit-learn and
Great Expectations take 2-4 s per stage on 2 CPU cores, more than many stages compute. ``fersynth warm``
starts one server that imports those libraries once, runs the given command with ``FERSYNTH_WARM`` pointing
at the server's socket, and stops the server afterwards. Each ``fersynth`` command started meanwhile (by DVC,
by hand) hands its arguments, working directory, environment, umask and standard streams to the server,
which forks a fresh worker to run it; the command's exit code comes back to the caller.

What keeps a warm run equal to a cold one:
- The server imports third-party libraries only; every worker imports fersynth itself from disk, so
  an edited stage is never served from a stale copy. The server never computes (no PyTorch op, no
  database connection), so a fork inherits no thread pool or open store.
- A caller whose interpreter or thread settings differ from the server's (``sys.executable``,
  ``OMP_NUM_THREADS``, ...; libraries read them once, at import) is told to start cold instead.
- Without a server, or when it cannot be reached, ``fersynth`` starts cold as always. Only a worker that
  started a command and then vanished (killed) makes the caller fail, with one line saying so.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback

ENV = "FERSYNTH_WARM"
"""The environment variable naming the server's socket."""

PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "PIL.Image",
    "yaml",
    "tqdm",
    "scipy.stats",
    "sklearn.metrics",
    "sklearn.model_selection",
    "matplotlib.figure",
    "matplotlib.pyplot",
    "torch",
    "torch.nn",
    "torch.optim",
    "torch._dynamo",
    "torchvision",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "great_expectations",
)
"""Third-party modules the stages import; a missing one is skipped."""

COMPATIBILITY_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
    "PYTHONPATH",
    "MPLBACKEND",
    "CUDA_VISIBLE_DEVICES",
)
"""Read once by the interpreter or a library at import: a caller must match the server on these."""

_HEADER = struct.Struct("!Q")
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def compatibility() -> dict:
    """What a caller and the server must share for a forked worker to behave like a new process."""
    return {"executable": sys.executable, "env": {name: os.environ.get(name) for name in COMPATIBILITY_ENV}}


# ---------------------------------------------------------------------------------------------- caller


def forward(args: list[str]) -> int | None:
    """Run ``fersynth ARGS`` in the warm server named by ``$FERSYNTH_WARM``; its exit code, or ``None``
    when the caller should start cold (no server, unreachable, incompatible). Imports the standard
    library only, so a caller costs milliseconds."""
    address = os.environ.get(ENV)
    if not address or (args[:1] == ["warm"]):
        return None
    try:
        streams = [os.dup(fd) for fd in (0, 1, 2)]
    except OSError:  # a closed standard stream: nothing to hand over
        return None
    umask = os.umask(0)
    os.umask(umask)
    request = json.dumps(
        {"args": args, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask, "compat": compatibility()}
    ).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            try:
                connection.connect(address)
                socket.send_fds(connection, [_HEADER.pack(len(request))], streams)
                connection.sendall(request)
            except OSError:
                return None
            finally:
                for fd in streams:
                    os.close(fd)
            replies = connection.makefile("r", encoding="utf-8")
            first = _read_reply(replies)
            if first is None or "cold" in first:
                return None
            return _wait_for_worker(first["pid"], replies)
    except OSError:
        return None


def _read_reply(replies) -> dict | None:
    try:
        line = replies.readline()
    except OSError:
        return None
    return json.loads(line) if line else None


def _wait_for_worker(pid: int, replies) -> int:
    """Relay Ctrl-C / termination to the worker until it reports its exit code."""
    received: list[int] = []

    def relay(signum, _frame):
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    previous = {signum: signal.signal(signum, relay) for signum in _SIGNALS}
    try:
        reply = _read_reply(replies)  # the relay runs while this waits (PEP 475 resumes the read)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if reply is not None and "exit" in reply:
        return int(reply["exit"])
    if received:
        return 128 + received[-1]
    print(f"fersynth: warm worker {pid} ended without an exit status (killed?)", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------- server


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules`` (missing ones skipped); the names imported."""
    imported = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        imported.append(name)
    return imported


def serve(address: str, stats_path: str | None = None) -> None:
    """Listen on ``address`` (bound before the slow imports, so early callers wait rather than start
    cold), then fork one worker per caller until SIGTERM. Writes served/cold counts to ``stats_path``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(128)
    preload()
    counts = {"warm": 0, "cold": 0, "cold_reasons": {}}
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the command; `fersynth warm` stops us
    compat = compatibility()
    server.settimeout(0.5)
    while not stopping:
        _reap()
        try:
            connection, _ = server.accept()
        except (TimeoutError, InterruptedError):
            continue
        except OSError:
            if stopping:
                break
            raise
        request, streams = _receive(connection)
        reason = _incompatible(request, compat)
        if reason:
            counts["cold"] += 1
            counts["cold_reasons"][reason] = counts["cold_reasons"].get(reason, 0) + 1
            with contextlib.suppress(OSError):
                connection.sendall((json.dumps({"cold": reason}) + "\n").encode())
            connection.close()
            for fd in streams:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            server.close()
            _work(connection, request, streams)
        counts["warm"] += 1
        connection.close()
        for fd in streams:
            os.close(fd)
    server.close()
    while _reap(block=True):
        pass
    if stats_path:
        with open(stats_path, "w", encoding="utf-8") as handle:
            json.dump(counts, handle)


def _reap(block: bool = False) -> bool:
    """Collect finished workers; True while some remain (``block``: wait for one)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        if block:
            return True


def _receive(connection: socket.socket) -> tuple[dict | None, list[int]]:
    connection.settimeout(30)
    try:
        header, streams, _flags, _address = socket.recv_fds(connection, _HEADER.size, 3)
        if len(header) != _HEADER.size or len(streams) != 3:
            return None, streams
        (size,) = _HEADER.unpack(header)
        chunks, remaining = [], size
        while remaining:
            chunk = connection.recv(min(remaining, 1 << 20))
            if not chunk:
                return None, streams
            chunks.append(chunk)
            remaining -= len(chunk)
        return json.loads(b"".join(chunks)), streams
    except (OSError, ValueError):
        return None, []


def _incompatible(request: dict | None, compat: dict) -> str | None:
    if request is None:
        return "unreadable request"
    theirs = request.get("compat", {})
    if theirs.get("executable") != compat["executable"]:
        return "another Python"
    differing = sorted(name for name in COMPATIBILITY_ENV if theirs.get("env", {}).get(name) != compat["env"][name])
    return f"{', '.join(differing)} differ" if differing else None


def _work(connection: socket.socket, request: dict, streams: list[int]) -> None:
    """In the forked worker: become the caller's process (cwd, environment, umask, streams), run the
    command with the fersynth code now on disk, report the exit code, exit."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        connection.settimeout(None)
        connection.sendall((json.dumps({"pid": os.getpid()}) + "\n").encode())
        for target, fd in enumerate(streams):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(request["umask"])
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(line_buffering=os.isatty(1))
        for name in [name for name in sys.modules if name == "fersynth" or name.startswith("fersynth.")]:
            del sys.modules[name]  # the worker imports fersynth from disk, as a new process would
        sys.argv = ["fersynth", *request["args"]]
        code = _run_command(request["args"])
        for thread in threading.enumerate():  # a new process waits for its non-daemon threads, too
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - the worker must always report and exit
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            connection.sendall((json.dumps({"exit": code}) + "\n").encode())
        os._exit(code)


def _run_command(args: list[str]) -> int:
    """``fersynth ARGS`` as the console script runs it; the exit code a new process would have."""
    from fersynth.cli import main

    try:
        main(args=args, prog_name="fersynth")
    except SystemExit as exit_:
        if exit_.code is None:
            return 0
        if isinstance(exit_.code, int):
            return exit_.code
        print(exit_.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - an uncaught error: traceback and 1, as Python does
        traceback.print_exc()
        return 1
    return 0


# -------------------------------------------------------------------------------------- fersynth warm


def run_warm(command: list[str]) -> int:
    """Start a server in a new interpreter, run ``command`` with ``$FERSYNTH_WARM`` set, stop the
    server, print how many fersynth commands ran warm; the command's exit code."""
    workdir = tempfile.mkdtemp(prefix="fersynth-warm-")
    address = os.path.join(workdir, "socket")
    stats_path = os.path.join(workdir, "stats.json")
    server = subprocess.Popen([sys.executable, "-m", "fersynth.warm", address, stats_path], stdin=subprocess.DEVNULL)
    try:
        for _ in range(200):  # the socket is bound before the imports: a few ms
            if os.path.exists(address) or server.poll() is not None:
                break
            threading.Event().wait(0.01)
        env = dict(os.environ)
        if server.poll() is None:
            env[ENV] = address
        try:
            code = subprocess.call(command, env=env)
        except FileNotFoundError:
            print(f"fersynth warm: error: no such command: {command[0]}", file=sys.stderr)
            code = 127
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        counts = _read_stats(stats_path)
        shutil.rmtree(workdir, ignore_errors=True)
    if counts is not None:
        reasons = "".join(f"; {count} cold: {reason}" for reason, count in sorted(counts["cold_reasons"].items()))
        print(f"fersynth warm: {counts['warm']} command(s) ran warm{reasons}", file=sys.stderr)
    return code


def _read_stats(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
