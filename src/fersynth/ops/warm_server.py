"""The warm server (:mod:`fersynth.ops.warm`): imports the heavy libraries once, takes calls on a unix socket and
forks one worker per call (:mod:`fersynth.ops.warm_worker`), reports each worker's status to its caller once it has
been reaped. Run as ``python -m fersynth.ops.warm_server ADDRESS ENTRY [STATS]`` by ``fersynth warm``."""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import time

from fersynth.ops import warm_limits
from fersynth.ops.warm_compat import compatibility, incompatible
from fersynth.ops.warm_wire import HEADER, READY, beside, hung_up, send
from fersynth.ops.warm_worker import Worker, die_with_parent

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

STOP_GRACE_S = 10.0
"""How long workers still running when the server stops have, after SIGTERM, to end (an MLflow run closes as
KILLED) before SIGKILL."""
STOPPED = "still running when the command ended"
KILLED_AFTER_GRACE = f"still running {STOP_GRACE_S:.0f} s after SIGTERM"
CALLER_VANISHED = "its caller vanished"


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


class Server:
    """Takes calls on a unix socket, forks one worker per call, reports each worker's status to its caller
    once it has been reaped, kills a worker whose caller vanished. Stopped (SIGTERM, or `fersynth warm` gone), it
    passes SIGTERM on to the workers still running, as a terminal or a process manager would have reached a
    cold stage, SIGKILLs those left after :data:`STOP_GRACE_S`, and exits once it has reaped every one of them.
    ``entry``: the click entry point each worker runs (:func:`fersynth.ops.warm_worker.entry_point`)."""

    def __init__(self, address: str, entry: str, stats_path: str | None = None) -> None:
        self.address = address
        self.entry = entry
        self.stats_path = stats_path
        self.counts: dict = {"warm": 0, "cold": 0, "cold_reasons": {}, "stopped": {}, "killed": {}}
        # every forked worker until reaped; its caller's connection, None once that caller has vanished
        self.workers: dict[int, socket.socket | None] = {}
        self.stopping = False
        self.parent = os.getppid()

    def serve(self) -> Worker | None:
        """The server loop; returns ``None`` in the server when stopped, a :class:`Worker` in a child."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.address)  # before the slow imports: early callers wait instead of starting cold
        listener.listen(128)
        self._load()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # in its own session; `fersynth warm` stops it
        deadline = None
        while self.workers or not self.stopping:
            if os.getppid() != self.parent:
                self.stopping = True
            if self.stopping and deadline is None:
                listener.close()
                self._terminate_workers()
                deadline = time.monotonic() + STOP_GRACE_S
            connections = [c for c in self.workers.values() if c is not None]
            watched = [wake_r, *connections] + ([] if self.stopping else [listener])
            readable, _, _ = select.select(watched, [], [], 0.5)  # SIGCHLD / SIGTERM wake it via wake_w
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            self._reap()
            self._kill_orphans(readable)
            if deadline is not None and time.monotonic() > deadline:
                for pid in self._running():
                    self._kill(pid, KILLED_AFTER_GRACE)
                deadline = math.inf  # once; what is left is being reaped
            if not self.stopping and listener in readable:
                worker = self._take_call(listener, (wake_r, wake_w))
                if worker is not None:
                    return worker
        self._write_stats()
        return None

    def _load(self) -> None:
        self.compat = compatibility()  # what a new process starts with, before the imports below change it
        started_with = dict(os.environ)
        preload()
        # set by the libraries as they loaded (KMP_INIT_AT_FORK, TORCHINDUCTOR_CACHE_DIR, ...): a new process
        # would set them at import, so each worker gets them, too, unless its caller set them already
        self.set_at_import = {k: v for k, v in os.environ.items() if started_with.get(k) != v}
        fill_caches()
        # the imported libraries' millions of objects live as long as the server: out of the collector's sight,
        # a worker's collections walk only its own objects (measured: metrics/bench/history.json, warm.gc_freeze)
        gc.freeze()
        open(beside(self.address, READY), "w").close()  # noqa: SIM115 (an empty marker: serving from now)

    def _terminate_workers(self) -> None:
        """SIGTERM to every running worker: each ends as a cold stage ends on SIGTERM (its MLflow run KILLED)."""
        for pid in self._running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # our unreaped child: its pid cannot have been reused
            self.counts["stopped"][STOPPED] = self.counts["stopped"].get(STOPPED, 0) + 1

    def _running(self) -> list[int]:
        """Workers not yet reaped nor killed (one whose caller vanished was killed at once)."""
        return [pid for pid, connection in self.workers.items() if connection is not None]

    def _kill_orphans(self, readable: list) -> None:
        for pid in self._running():
            connection = self.workers[pid]
            if connection in readable and hung_up(connection):
                self._kill(pid, CALLER_VANISHED)  # a killed caller takes its worker with it

    def _kill(self, pid: int, reason: str) -> None:
        """SIGKILL ``pid``, which stays in :attr:`workers` until reaped (the server exits only after that)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if reason == CALLER_VANISHED:
            self.workers[pid].close()
            self.workers[pid] = None  # nobody is left to tell
        # else the caller still waits: once reaped, it learns of the SIGKILL and dies by it, as it would cold
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
                send(connection, {"signal": -code} if code < 0 else {"exit": code})
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
        reason = "unreadable call" if request is None else self._refusal(request)
        pid, server = -1, os.getpid()
        if reason is None:
            try:
                pid = os.fork()
            except OSError as error:
                reason = f"fork failed ({error.strerror})"
        if pid == 0:  # the worker: bound to the server's life, drops its descriptors, hands the call up the stack
            die_with_parent(server)
            signal.set_wakeup_fd(-1)
            for fd in pipe:
                os.close(fd)
            listener.close()
            connection.close()
            for other in self.workers.values():
                if other is not None:
                    other.close()
            return Worker(request | {"env": self.set_at_import | request["env"]}, streams, self.entry)
        for fd in streams:
            os.close(fd)
        if reason is not None:
            self.counts["cold"] += 1
            self.counts["cold_reasons"][reason] = self.counts["cold_reasons"].get(reason, 0) + 1
            send(connection, {"cold": reason})
            connection.close()
            return None
        self.counts["warm"] += 1
        self.workers[pid] = connection
        send(connection, {"pid": pid})
        return None

    def _refusal(self, request: dict) -> str | None:
        """Why a worker could not run as the caller's own process would (the caller then starts cold)."""
        return incompatible(request.get("compat", {}), self.compat) or warm_limits.refusal(
            request.get("settings"), warm_limits.settings()
        )

    @staticmethod
    def _receive(connection: socket.socket) -> tuple[dict | None, list[int]]:
        """The caller's request and its three standard streams; on any failure, ``None`` and no fds."""
        streams: list[int] = []
        try:
            connection.settimeout(10)
            send(connection, {"ready": True})
            header, streams, _flags, _address = socket.recv_fds(connection, HEADER.size, 3)
            if len(header) != HEADER.size or len(streams) != 3:
                raise ValueError("incomplete call")
            (size,) = HEADER.unpack(header)
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


def main(argv: list[str]) -> None:
    """``ADDRESS ENTRY [STATS]``: serve until stopped; in a forked worker, run its caller's command."""
    address, entry, *stats = argv
    worker = Server(address, entry, stats[0] if stats else None).serve()
    if worker is not None:
        worker.run()


if __name__ == "__main__":
    main(sys.argv[1:])
