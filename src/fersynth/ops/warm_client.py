"""The caller's side of ``fersynth warm`` (:mod:`fersynth.ops.warm`): a ``fersynth`` process that finds a warm server
hands it its call and becomes a stand-in for the worker that runs it. Standard library only, so a caller costs
milliseconds."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys

from fersynth.ops import warm_limits
from fersynth.ops.warm_compat import compatibility
from fersynth.ops.warm_wire import (
    COLD_NOTES,
    COLD_WHILE_LOADING_ENV,
    ENV,
    GREETING_TIMEOUT_S,
    HEADER,
    READY,
    RELAYED_SIGNALS,
    beside,
    reply,
)

ORPHAN_WAIT_S = 10.0
"""How long a caller whose server died waits for the worker it killed to be gone before reporting failure."""


def forward(args: list[str]) -> int | None:
    """Run ``fersynth ARGS`` in the warm server named by ``$FERSYNTH_WARM``; its exit code, or ``None``
    when the caller should start cold (no server, unreachable, busy past the greeting timeout,
    incompatible). Does not return when the worker died by a signal: the caller then dies by the same signal."""
    address = os.environ.get(ENV)
    if not address or args[:1] == ["warm"]:
        return None
    if os.environ.get(COLD_WHILE_LOADING_ENV) and not os.path.exists(beside(address, READY)):
        with contextlib.suppress(OSError), open(beside(address, COLD_NOTES), "a", encoding="utf-8") as notes:
            notes.write("server still loading\n")  # one short append: whole lines even from parallel callers
        return None
    try:
        cwd = os.getcwd()
        streams = [os.dup(fd) for fd in (0, 1, 2)]
    except OSError:  # a deleted working directory, a closed standard stream: start cold
        return None
    try:
        return _call(address, args, cwd, streams)
    except (OSError, ValueError):  # includes the greeting timeout
        return None
    finally:
        for fd in streams:
            os.close(fd)


def _call(address: str, args: list[str], cwd: str, streams: list[int]) -> int | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(GREETING_TIMEOUT_S)
        connection.connect(address)
        replies = connection.makefile("r", encoding="utf-8")
        if reply(replies) != {"ready": True}:
            return None
        payload = json.dumps(_request(args, cwd)).encode()
        socket.send_fds(connection, [HEADER.pack(len(payload))], streams)
        connection.sendall(payload)
        connection.settimeout(None)
        first = reply(replies)
        if first is None or "pid" not in first:
            return None  # told to start cold, or the server died before forking: nothing ran
        return _wait_for_worker(first["pid"], replies)


def _request(args: list[str], cwd: str) -> dict:
    """Everything a forked worker needs to become this process."""
    umask = os.umask(0)
    os.umask(umask)
    return {
        "args": args,
        "argv0": sys.argv[0],
        "path": sys.path,
        "cwd": cwd,
        "env": dict(os.environ),
        "umask": umask,
        "ignored": [int(s) for s in RELAYED_SIGNALS if signal.getsignal(s) is signal.SIG_IGN],
        "settings": warm_limits.settings(),
        "compat": compatibility(),
    }


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
        status = reply(replies)  # the relay runs while this waits (PEP 475 resumes the read)
    except (OSError, ValueError):
        status = None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if status is None and target is not None:
            _end_orphan(target)
        if target is not None:
            os.close(target)
    if status is not None and "exit" in status:
        return int(status["exit"])
    if status is not None and "signal" in status:
        _die_by(status["signal"])
        return 128 + status["signal"]  # the signal is blocked or cannot kill: report it as a shell would
    print(f"fersynth: the warm server ended while worker {pid} ran; its result is unknown", file=sys.stderr)
    return 1


def _end_orphan(target: int) -> None:
    """The server died (SIGKILL, OOM) with the worker still running: kill the worker and wait until it is gone, so
    that when DVC sees this stage fail nothing of it is left to publish outputs (the kernel kills it, too, as its
    server dies, but only after the server's socket closed)."""
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(target, signal.SIGKILL)
        select.select([target], [], [], ORPHAN_WAIT_S)  # a pidfd turns readable once its process has exited


def _die_by(signum: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError, ValueError):  # SIGKILL / SIGSTOP keep their default anyway
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
