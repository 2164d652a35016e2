"""The process settings a warm worker takes from its caller (:mod:`fersynth.ops.warm`): resource limits (``ulimit``,
``prlimit``, a sandbox's), the nice value and the OOM score adjustment. A forked worker starts with the server's, yet
a stage must run as confined as the process its caller would have started.

Lowering a limit, raising the nice value or the OOM score is always allowed; the reverse needs a privilege the
server may lack, so a caller that asks for it starts cold instead (:func:`refusal` says why, in a few words).
Standard library only: every ``fersynth`` process imports it."""

from __future__ import annotations

import math
import os
import resource

START_UP_LIMITS = ("RLIMIT_STACK",)
"""Limits read once at start-up (the C library sizes every new thread's stack from ``RLIMIT_STACK``): a worker's
threads would keep the server's, so a caller must match the server's exactly."""
OOM_SCORE_ADJ = "/proc/self/oom_score_adj"


def settings() -> dict:
    """This process's limits (``[soft, hard]`` by ``RLIMIT_*`` name), nice value and OOM score adjustment."""
    return {
        "rlimits": {name: list(resource.getrlimit(getattr(resource, name))) for name in _limit_names()},
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "oom_score_adj": _oom_score_adj(),
    }


def refusal(caller: dict | None, server: dict) -> str | None:
    """Why a worker forked from a server with ``server``'s :func:`settings` could not take ``caller``'s; ``None``
    when :func:`take` will succeed.

    >>> refusal({"rlimits": {"RLIMIT_NOFILE": [64, 64]}, "nice": 7, "oom_score_adj": 0},
    ...         {"rlimits": {"RLIMIT_NOFILE": [1024, 4096]}, "nice": 0, "oom_score_adj": 0}) is None
    True
    """
    if caller is None:
        return "process settings not sent"
    for name, (soft, hard) in sorted(caller["rlimits"].items()):
        ours = server["rlimits"].get(name)
        if ours is None:
            return f"{name} unknown to the server"
        if name in START_UP_LIMITS and [soft, hard] != ours:
            return f"{name} differ"
        if _size(hard) > _size(ours[1]):
            return f"{name} above the server's"
    if caller["nice"] < server["nice"]:
        return "nice below the server's"
    if (
        None not in (caller["oom_score_adj"], server["oom_score_adj"])
        and caller["oom_score_adj"] < server["oom_score_adj"]
    ):
        return "oom_score_adj below the server's"
    return None


def take(caller: dict) -> None:
    """Give this process (a worker just forked, before it starts a thread: nice is per thread, and new threads
    inherit it) ``caller``'s settings, which :func:`refusal` accepted."""
    os.setpriority(os.PRIO_PROCESS, 0, caller["nice"])
    if caller["oom_score_adj"] is not None and caller["oom_score_adj"] != _oom_score_adj():
        with open(OOM_SCORE_ADJ, "w", encoding="ascii") as handle:
            handle.write(f"{caller['oom_score_adj']}\n")
    for name, (soft, hard) in caller["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _limit_names() -> list[str]:
    return sorted(name for name in dir(resource) if name.startswith("RLIMIT_"))


def _size(limit: int) -> float:
    return math.inf if limit == resource.RLIM_INFINITY else limit


def _oom_score_adj() -> int | None:
    try:
        with open(OOM_SCORE_ADJ, encoding="ascii") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None
