"""The process settings a warm worker takes from its caller: the server's rule for what a forked worker can take
(lowering is free, raising needs a privilege the server may lack) and the settings read at start-up that must match.
tests/test_warm.py runs real callers under ``ulimit`` and ``nice``."""

from __future__ import annotations

import resource

import pytest

from fersynth.ops.warm_limits import refusal, settings

INFINITY = resource.RLIM_INFINITY


def _settings(nofile=(1024, 4096), cpu=(INFINITY, INFINITY), stack=(8 << 20, INFINITY), nice=0, oom=0) -> dict:
    rlimits = {"RLIMIT_NOFILE": list(nofile), "RLIMIT_CPU": list(cpu), "RLIMIT_STACK": list(stack)}
    return {"rlimits": rlimits, "nice": nice, "oom_score_adj": oom}


SERVER = _settings()


@pytest.mark.parametrize(
    "caller",
    [
        _settings(),
        _settings(nofile=(200, 200), cpu=(600, 600), nice=7, oom=500),  # a sandboxed caller: everything lowered
        _settings(nofile=(4096, 4096)),  # a soft limit raised up to the server's hard one
    ],
)
def test_a_worker_takes_lower_limits_a_higher_soft_limit_and_a_higher_nice(caller):
    assert refusal(caller, SERVER) is None


@pytest.mark.parametrize(
    ("caller", "reason"),
    [
        (_settings(nofile=(1024, 8192)), "RLIMIT_NOFILE above the server's"),
        (_settings(nofile=(INFINITY, INFINITY)), "RLIMIT_NOFILE above the server's"),  # unlimited is the highest
        (_settings(stack=(16 << 20, INFINITY)), "RLIMIT_STACK differ"),  # thread stacks were sized at start-up
        (_settings(stack=(4 << 20, INFINITY)), "RLIMIT_STACK differ"),
        (_settings(nice=-5), "nice below the server's"),
        (_settings(oom=-100), "oom_score_adj below the server's"),
        (None, "process settings not sent"),
    ],
)
def test_a_caller_asking_more_than_the_server_can_give_is_refused_with_the_reason(caller, reason):
    assert refusal(caller, SERVER) == reason


def test_a_server_with_an_unlimited_hard_limit_serves_any_caller():
    server = _settings(cpu=(INFINITY, INFINITY))
    assert refusal(_settings(cpu=(600, INFINITY)), server) is None
    assert refusal(_settings(cpu=(600, 600)), server) is None


def test_this_process_is_served_by_a_copy_of_itself():
    here = settings()
    assert "RLIMIT_NOFILE" in here["rlimits"] and isinstance(here["nice"], int)
    assert refusal(here, here) is None
