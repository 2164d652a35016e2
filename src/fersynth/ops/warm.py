"""A warm fersynth for long command runs: ``fersynth warm -- dvc repro``.

A pipeline run starts ~65 ``fersynth`` processes, and most of their time is spent importing the same
libraries: PyTorch (with the ``torch._dynamo`` that every optimizer pulls in), MLflow, scikit-learn and
Great Expectations take 2-4 s per stage on 2 CPU cores, more than many stages compute. ``fersynth warm``
starts one server (in its own session) that imports those libraries once, runs the given command with
``FERSYNTH_WARM`` naming the server's socket, and stops the server afterwards. Each ``fersynth`` command
started meanwhile (by DVC, by hand) hands its arguments, ``argv[0]``, ``sys.path``, working directory,
environment, umask, ignored signals and standard streams to the server, which forks a worker that becomes
that process and runs the command; the worker's exit status (code or signal) comes back to the caller.

What keeps a warm run equal to a cold one:
- The server imports third-party libraries only, and every worker imports fersynth itself from disk,
  so an edited stage is never served from a stale copy. The server never computes (no PyTorch op, no
  database connection); its only threads at fork time are the idle pools native libraries start at load
  (OpenBLAS, jemalloc), which handle fork themselves, as in any forked DataLoader worker.
- Settings that libraries read once, at import (``OMP_*``, ``TORCH*``, ``TQDM_*``, ``MPL*``, locale,
  ``PYTHON*``, interpreter flags, CPU affinity, ...) must match the server's; a caller whose settings differ
  is told to start cold. Random generators seeded at import (PyTorch, NumPy) are re-seeded in each worker.
- A worker exits as a new process does (threads joined, atexit callbacks run, streams flushed) but
  without finalising the server's modules, and the server reports its status only after reaping it, so
  DVC never hashes half-written outputs.
- Ctrl-C and termination reach the worker through its caller; a caller that vanishes (SIGKILL) takes its
  worker with it. Without a server, or when it cannot be reached in time, ``fersynth`` starts cold, as
  always; a command is never run twice.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from pathlib import Path
from typing import NoReturn

ENV = "FERSYNTH_WARM"
"""The environment variable naming the server's socket."""
COLD_WHILE_LOADING_ENV = "FERSYNTH_WARM_COLD_WHILE_LOADING"
"""Set by ``fersynth warm --cold-while-loading``: a caller that finds the server still importing starts cold
(on the other core) instead of waiting for it."""
READY = "ready"  # the file the server writes beside its socket once it can serve
COLD_NOTES = "cold-while-loading"  # callers that started cold for that reason, one line each

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
    "mlflow.pyfunc",
    "mlflow.models",
    "git",  # GitPython: MLflow's run and model logging read the commit
    "safetensors.torch",
    "email.policy",  # MLflow parses package metadata when it logs a model's requirements
    "pyarrow.pandas_compat",
    "great_expectations",
)
"""Third-party modules the stages import; one that is missing or fails to import is skipped."""

IMPORT_TIME_ENV_PREFIXES = (
    "PYTHON",
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "ATEN_",  # ATen's vectorisation (fersynth.runtime pins it): read at import
    "ONEDNN_",
    "DNNL_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "TQDM_",
    "MPL",
    "NPY_",
    "NUMPY_",
    "XDG_",
    "LC_",
    "GX_",
    "GIT_PYTHON_",  # GitPython (preloaded for MLflow) reads its git executable at import
)
IMPORT_TIME_ENV = ("HOME", "LANG", "LANGUAGE", "MATPLOTLIBRC")
"""Environment read by the interpreter or a preloaded library at start-up: callers must match the server."""

GREETING_TIMEOUT_S = 60.0
"""How long a caller waits for the server to take its call (it takes calls once its imports are done,
~6 s after start on 2 cores) before starting cold instead."""

RELAYED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_HEADER = struct.Struct("!Q")


def compatibility() -> dict:
    """What a caller and the server must share for a forked worker to behave like a new process."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(IMPORT_TIME_ENV_PREFIXES) or name in IMPORT_TIME_ENV
    }
    return {
        "executable": sys.executable,
        "flags": list(sys.flags),
        "warnoptions": list(sys.warnoptions),
        "xoptions": {str(k): str(v) for k, v in sys._xoptions.items()},
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "env": env,
    }


def _incompatible(theirs: dict, ours: dict) -> str | None:
    for key in ("executable", "flags", "warnoptions", "xoptions", "affinity"):
        if theirs.get(key) != ours[key]:
            return f"{key} differ"
    env = theirs.get("env", {})
    differing = sorted(name for name in set(env) | set(ours["env"]) if env.get(name) != ours["env"].get(name))
    return f"{', '.join(differing)} differ" if differing else None


def _hung_up(connection: socket.socket) -> bool:
    """A caller never writes after its call, so a readable connection means it closed (or broke)."""
    try:
        return not connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _send(connection: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):
        connection.sendall((json.dumps(message) + "\n").encode())


# ---------------------------------------------------------------------------------------------- caller


def forward(args: list[str]) -> int | None:
    """Run ``fersynth ARGS`` in the warm server named by ``$FERSYNTH_WARM``; its exit code, or ``None``
    when the caller should start cold (no server, unreachable, busy past the greeting timeout,
    incompatible). Imports the standard library only, so a caller costs milliseconds. Does not return
    when the worker died by a signal: the caller then dies by the same signal."""
    address = os.environ.get(ENV)
    if not address or args[:1] == ["warm"]:
        return None
    if os.environ.get(COLD_WHILE_LOADING_ENV) and not os.path.exists(_beside(address, READY)):
        with contextlib.suppress(OSError), open(_beside(address, COLD_NOTES), "a", encoding="utf-8") as notes:
            notes.write("server still loading\n")  # one short append: whole lines even from parallel callers
        return None
    try:
        cwd = os.getcwd()
        streams = [os.dup(fd) for fd in (0, 1, 2)]
    except OSError:  # a deleted working directory, a closed standard stream: start cold
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(GREETING_TIMEOUT_S)
            connection.connect(address)
            replies = connection.makefile("r", encoding="utf-8")
            if _reply(replies) != {"ready": True}:
                return None
            umask = os.umask(0)
            os.umask(umask)
            request = {
                "args": args,
                "argv0": sys.argv[0],
                "path": sys.path,
                "cwd": cwd,
                "env": dict(os.environ),
                "umask": umask,
                "ignored": [int(s) for s in RELAYED_SIGNALS if signal.getsignal(s) is signal.SIG_IGN],
                "compat": compatibility(),
            }
            payload = json.dumps(request).encode()
            socket.send_fds(connection, [_HEADER.pack(len(payload))], streams)
            connection.sendall(payload)
            connection.settimeout(None)
            first = _reply(replies)
            if first is None or "pid" not in first:
                return None  # told to start cold, or the server died before forking: nothing ran
            return _wait_for_worker(first["pid"], replies)
    except (OSError, ValueError):  # includes the greeting timeout
        return None
    finally:
        for fd in streams:
            os.close(fd)


def _reply(replies) -> dict | None:
    line = replies.readline()
    return json.loads(line) if line else None


def _wait_for_worker(pid: int, replies) -> int:
    """Relay signals to the worker until the server reports how it ended; a worker killed by a signal
    makes this process die by the same signal, so the caller's caller (DVC) sees what it would cold."""
    target = None
    with contextlib.suppress(OSError, AttributeError):
        target = os.pidfd_open(pid)  # immune to pid reuse

    def relay(signum, _frame):
        with contextlib.suppress(OSError):
            if target is not None:
                signal.pidfd_send_signal(target, signum)
            else:
                os.kill(pid, signum)

    previous = {s: signal.signal(s, relay) for s in RELAYED_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        status = _reply(replies)  # the relay runs while this waits (PEP 475 resumes the read)
    except (OSError, ValueError):
        status = None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if target is not None:
            os.close(target)
    if status is not None and "exit" in status:
        return int(status["exit"])
    if status is not None and "signal" in status:
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError, ValueError):  # SIGKILL / SIGSTOP keep their default anyway
            signal.signal(status["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), status["signal"])
        return 128 + status["signal"]  # the signal is blocked or cannot kill: report it as a shell would
    print(f"fersynth: the warm server ended while worker {pid} ran; its result is unknown", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------- server


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    """Import ``modules``, skipping any that is missing or fails."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as fersynth.tracking sets it before import
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # as fersynth.checks.validate sets it before import
    for name in modules:
        with contextlib.suppress(Exception):  # a library that cannot load stays cold, the server stays up
            importlib.import_module(name)


def fill_caches() -> None:
    """Fill, once, caches that every stage would otherwise fill on first use, with what a new process would
    compute (the same venv): MLflow's module -> package map, a scan of every installed distribution's files
    (~1.2 s on the first model a training stage logs)."""
    with contextlib.suppress(Exception):
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()


def entry_point(entry: str):
    """The callable that ``entry`` (``"module:attribute"``, e.g. ``"fersynth.cli:main"``) names, imported now.
    The caller names its own entry point, so this module imports no command of fersynth's."""
    module, _, attribute = entry.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Worker:
    """A forked worker: becomes its caller's process, then runs the command at the top of the stack with the
    click entry point ``entry`` (imported from disk, after :meth:`become_caller`)."""

    def __init__(self, request: dict, streams: list[int], entry: str) -> None:
        self.request = request
        self.streams = streams
        self.entry = entry

    def become_caller(self) -> None:
        request = self.request
        for target, fd in enumerate(self.streams):
            os.dup2(fd, target)
            os.close(fd)
        _rebuild_standard_streams()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(request["umask"])
        for signum in (signal.SIGCHLD, *RELAYED_SIGNALS):
            ignored = int(signum) in request["ignored"]
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, signal.SIG_IGN if ignored else default)
        time.tzset()
        tempfile.tempdir = None
        sys.argv = [request["argv0"], *request["args"]]
        sys.path[:] = request["path"]
        main = types.ModuleType("__main__")
        main.__file__ = request["argv0"]
        sys.modules["__main__"] = main
        for name in [name for name in sys.modules if name == "fersynth" or name.startswith("fersynth.")]:
            del sys.modules[name]  # fersynth is imported from disk, as a new process would
        importlib.invalidate_caches()
        _reseed()

    def run(self) -> NoReturn:
        """``fersynth ARGS`` as the console script runs it, then exit as a new process would: same exit
        code (an uncaught Ctrl-C ends by SIGINT), non-daemon threads joined after threading's exit hooks
        (open executors), atexit callbacks run, standard streams flushed. What the interpreter would do
        after that, finalising every module of the server (2.5 s with PyTorch loaded), is skipped: like a
        new process, a stage must close what it writes (fersynth writes its outputs atomically)."""
        code, signum = 1, None
        try:
            self.become_caller()
            main = entry_point(self.entry)
            main(args=self.request["args"], prog_name=os.path.basename(self.request["argv0"]) or "fersynth")
            code = 0
        except SystemExit as exit_:
            code = _exit_code(exit_)
        except KeyboardInterrupt:
            traceback.print_exc()
            signum = signal.SIGINT
        except BaseException:  # noqa: BLE001 - uncaught, as Python reports it: a traceback and 1
            traceback.print_exc()
        finally:
            _exit(code, signum)


def _exit_code(exit_: SystemExit) -> int:
    if exit_.code is None:
        return 0
    if isinstance(exit_.code, int):
        return exit_.code
    print(exit_.code, file=sys.stderr)
    return 1


def _exit(code: int, signum: int | None) -> NoReturn:
    with contextlib.suppress(BaseException):
        shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls first at exit
        if shutdown is not None:
            shutdown()
        else:  # pragma: no cover - other Pythons
            for thread in threading.enumerate():
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    if signum is not None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(code)


def _rebuild_standard_streams() -> None:
    """New text streams over fds 0-2, built as the interpreter builds them at start-up: the same encoding
    and -u / PYTHONUNBUFFERED handling, buffering by what the fds now are (a terminal is line-buffered,
    a pipe or file block-buffered; stderr always by line)."""

    def text(fd: int, old: io.TextIOWrapper, line_buffering: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        if isinstance(old.buffer, io.FileIO):  # unbuffered: writes go straight to the fd
            buffer = raw
        else:
            buffer = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        return io.TextIOWrapper(
            buffer, old.encoding, old.errors, line_buffering=line_buffering, write_through=old.write_through
        )

    sys.stdin = sys.__stdin__ = text(0, sys.__stdin__, False)
    sys.stdout = sys.__stdout__ = text(1, sys.__stdout__, os.isatty(1))
    sys.stderr = sys.__stderr__ = text(2, sys.__stderr__, True)


def _reseed() -> None:
    """Generators seeded once at import would otherwise start every worker from the server's state."""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].default_generator.seed()
    if "multiprocessing" in sys.modules:
        sys.modules["multiprocessing"].current_process().authkey = os.urandom(32)


class Server:
    """Takes calls on a unix socket, forks one worker per call, reports each worker's status to its caller
    once it has been reaped, kills a worker whose caller vanished. ``entry``: the click entry point each worker
    runs (:func:`entry_point`)."""

    def __init__(self, address: str, entry: str, stats_path: str | None = None) -> None:
        self.address = address
        self.entry = entry
        self.stats_path = stats_path
        self.counts: dict = {"warm": 0, "cold": 0, "cold_reasons": {}, "killed": {}}
        self.workers: dict[int, socket.socket] = {}
        self.stopping = False
        self.parent = os.getppid()

    def serve(self) -> Worker | None:
        """The server loop; returns ``None`` in the server when stopped, a :class:`Worker` in a child."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.address)  # before the slow imports: early callers wait instead of starting cold
        listener.listen(128)
        self.compat = compatibility()  # what a new process starts with, before the imports below change it
        started_with = dict(os.environ)
        preload()
        # set by the libraries as they loaded (KMP_INIT_AT_FORK, TORCHINDUCTOR_CACHE_DIR, ...): a new process
        # would set them at import, so each worker gets them, too, unless its caller set them already
        self.set_at_import = {k: v for k, v in os.environ.items() if started_with.get(k) != v}
        fill_caches()
        # the imported libraries' millions of objects live as long as the server: out of the collector's sight,
        # a worker's collections walk only its own objects (a `fersynth validate` worker: 0.9 s -> 0.5 s)
        gc.freeze()
        open(_beside(self.address, READY), "w").close()  # noqa: SIM115 (an empty marker: serving from now)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # in its own session; `fersynth warm` stops it
        deadline = None
        while self.workers or not self.stopping:
            if self.stopping and deadline is None:
                listener.close()
                deadline = time.monotonic() + 10  # callers that still run get 10 s, then their workers die
            if os.getppid() != self.parent:
                self.stopping = True
            watched = [wake_r, *self.workers.values()] + ([] if self.stopping else [listener])
            readable, _, _ = select.select(watched, [], [], 0.5)  # SIGCHLD / SIGTERM wake it via wake_w
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            self._reap()
            for pid, connection in list(self.workers.items()):
                if connection in readable and _hung_up(connection):
                    self._kill(pid, "its caller vanished")  # a killed caller takes its worker with it
            if deadline is not None and time.monotonic() > deadline:
                for pid in list(self.workers):
                    self._kill(pid, "still running 10 s after the command ended")
            if not self.stopping and listener in readable:
                worker = self._take_call(listener, (wake_r, wake_w))
                if worker is not None:
                    return worker
        self._write_stats()
        return None

    def _kill(self, pid: int, reason: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.workers.pop(pid).close()  # reaped later; nobody is left to tell
        self.counts["killed"][reason] = self.counts["killed"].get(reason, 0) + 1

    def _stop(self, _signum, _frame) -> None:
        self.stopping = True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.workers.pop(pid, None)
            if connection is not None:
                code = os.waitstatus_to_exitcode(status)
                _send(connection, {"signal": -code} if code < 0 else {"exit": code})
                connection.close()

    def _take_call(self, listener: socket.socket, pipe: tuple[int, int]) -> Worker | None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return None
        uid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid != os.getuid():  # the socket's directory is private; this is the second lock
            connection.close()
            return None
        request, streams = self._receive(connection)
        reason = "unreadable call" if request is None else _incompatible(request.get("compat", {}), self.compat)
        pid = -1
        if reason is None:
            try:
                pid = os.fork()
            except OSError as error:
                reason = f"fork failed ({error.strerror})"
        if pid == 0:  # the worker: drop the server's descriptors, hand the call up the stack
            signal.set_wakeup_fd(-1)
            for fd in pipe:
                os.close(fd)
            listener.close()
            connection.close()
            for other in self.workers.values():
                other.close()
            return Worker(request | {"env": self.set_at_import | request["env"]}, streams, self.entry)
        for fd in streams:
            os.close(fd)
        if reason is not None:
            self.counts["cold"] += 1
            self.counts["cold_reasons"][reason] = self.counts["cold_reasons"].get(reason, 0) + 1
            _send(connection, {"cold": reason})
            connection.close()
            return None
        self.counts["warm"] += 1
        self.workers[pid] = connection
        _send(connection, {"pid": pid})
        return None

    @staticmethod
    def _receive(connection: socket.socket) -> tuple[dict | None, list[int]]:
        """The caller's request and its three standard streams; on any failure, ``None`` and no fds."""
        streams: list[int] = []
        try:
            connection.settimeout(10)
            _send(connection, {"ready": True})
            header, streams, _flags, _address = socket.recv_fds(connection, _HEADER.size, 3)
            if len(header) != _HEADER.size or len(streams) != 3:
                raise ValueError("incomplete call")
            (size,) = _HEADER.unpack(header)
            chunks, remaining = [], size
            while remaining:
                chunk = connection.recv(min(remaining, 1 << 20))
                if not chunk:
                    raise ValueError("call cut short")
                chunks.append(chunk)
                remaining -= len(chunk)
            connection.settimeout(None)
            return json.loads(b"".join(chunks)), streams
        except (OSError, ValueError):
            for fd in streams:
                os.close(fd)
            return None, []

    def _write_stats(self) -> None:
        if self.stats_path:
            with open(self.stats_path, "w", encoding="utf-8") as handle:
                json.dump(self.counts, handle)


# -------------------------------------------------------------------------------------- fersynth warm


def run_warm(command: list[str], entry: str, cold_while_loading: bool = False) -> int:
    """Start a server in a new interpreter and session, run ``command`` with ``$FERSYNTH_WARM`` set (Ctrl-C
    reaches it from the terminal, termination is passed on), stop the server, say how many fersynth
    commands ran warm; the command's exit status, 128 + N for a signal N. ``entry``: the click entry point
    the server's workers run, ``"module:attribute"`` (the caller's own, ``"fersynth.cli:main"``).
    ``cold_while_loading``: commands started before the server has imported everything run cold beside it
    instead of waiting (the first stage of a `dvc repro` overlaps the server's ~7 s of imports on a second
    core)."""
    _guard_lockfile()  # a lock a killed `dvc repro` left empty is restored before DVC reads it
    workdir = tempfile.mkdtemp(prefix="fersynth-warm-")
    if len(workdir) > 90:  # a unix socket path holds ~107 bytes; a long TMPDIR would not fit
        shutil.rmtree(workdir)
        workdir = tempfile.mkdtemp(prefix="fersynth-warm-", dir="/tmp")
    address = os.path.join(workdir, "socket")
    stats_path = os.path.join(workdir, "stats.json")
    server = subprocess.Popen(
        [sys.executable, "-m", "fersynth.ops.warm", address, entry, stats_path],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
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
        early = _read_lines(_beside(address, COLD_NOTES))
        if counts is None and early:  # stopped before it could serve: every command ran cold, and we know why
            counts = {"warm": 0, "cold_reasons": {}, "killed": {}}
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


def _beside(address: str, name: str) -> str:
    return os.path.join(os.path.dirname(address), name)


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
    reasons += "".join(f"; {count} killed: {reason}" for reason, count in sorted(counts["killed"].items()))
    print(f"fersynth warm: {counts['warm']} command(s) ran warm{reasons}", file=sys.stderr)


if __name__ == "__main__":
    address, entry, *stats = sys.argv[1:]
    worker = Server(address, entry, stats[0] if stats else None).serve()
    if worker is not None:
        worker.run()
