"""The warm server's wire (:mod:`fersynth.ops.warm`): where its socket and marker files are, and the one-line JSON
messages a caller and the server exchange. Standard library only: every ``fersynth`` process imports it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct

ENV = "FERSYNTH_WARM"
"""The environment variable naming the server's socket."""
COLD_WHILE_LOADING_ENV = "FERSYNTH_WARM_COLD_WHILE_LOADING"
"""Set by ``fersynth warm --cold-while-loading``: a caller that finds the server still importing starts cold
(on the other core) instead of waiting for it."""
READY = "ready"  # the file the server writes beside its socket once it can serve
COLD_NOTES = "cold-while-loading"  # callers that started cold for that reason, one line each

GREETING_TIMEOUT_S = 60.0
"""How long a caller waits for the server to take its call (it takes calls once its imports are done,
~6 s after start on 2 cores) before starting cold instead."""

RELAYED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
"""Signals a caller passes on to its worker, as they would have reached a cold process."""
HEADER = struct.Struct("!Q")
"""The length of a call's JSON, sent with the caller's three standard streams attached."""


def beside(address: str, name: str) -> str:
    """The path of file ``name`` in the server's private directory, beside its socket ``address``."""
    return os.path.join(os.path.dirname(address), name)


def send(connection: socket.socket, message: dict) -> None:
    """One message; a peer that has gone is no error (nobody is left to tell)."""
    with contextlib.suppress(OSError):
        connection.sendall((json.dumps(message) + "\n").encode())


def reply(replies) -> dict | None:
    """The next message from the line reader ``replies``; ``None`` when the peer closed the connection."""
    line = replies.readline()
    return json.loads(line) if line else None


def hung_up(connection: socket.socket) -> bool:
    """A caller never writes after its call, so a readable connection means it closed (or broke)."""
    try:
        return not connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
