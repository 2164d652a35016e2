"""A warm worker (:mod:`fersynth.ops.warm`): a fork of the server that becomes its caller's process (streams,
working directory, environment, umask, signals, limits) and runs the caller's command, then exits as a new process
would. It dies with its server: a worker must never outlive the run that DVC watches."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import io
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
import types
from typing import NoReturn

from fersynth.ops import warm_limits
from fersynth.ops.warm_wire import RELAYED_SIGNALS

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` (the server that forked it) dies, by whatever means:
    an orphaned worker would run on after its caller reported failure, publish its outputs and end its MLflow
    run FINISHED behind DVC's back. Checks ``parent`` afterwards: it may have died before the request."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


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
        """Take on everything of the caller's that a new process would have had, its limits first (before any
        thread starts: the nice value is per thread)."""
        request = self.request
        warm_limits.take(request["settings"])
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
