"""Generate until each cell's quota of gated images is met, or its attempt budget is spent.

A cell is (emotion, gender, age group, ethnicity). Every attempt has its own seed, derived from the
stage seed, the cell and the attempt number, so a run is reproducible and any single image can be made
again from its manifest row. Rounds ask each unfinished cell for exactly what it still lacks; the
backend batches across cells. Every attempt, accepted or not, is kept in the attempts log; acceptance
per emotion is the measured "prompt effectiveness" of paper 001's Table 11. Under ``torchrun`` the
processes split every round and gather its verdicts: the attempts and pictures are one process's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fersynth.generate.backends import Backend
from fersynth.generate.gate import Gate, GateResult
from fersynth.generate.prompts import TABLE11_EFFECTIVENESS, FaceRequest, PromptBuilder
from fersynth.log import get_logger
from fersynth.modeling.process_group import Distributed, all_gather, gather_to_main
from fersynth.variants.labels import AGE_GROUPS, BASIC7, ETHNICITIES, GENDERS

log = get_logger(__name__)
Cell = tuple[str, str, str, str]
SINGLE = Distributed()  # one process: no process group


@dataclass
class Attempt:
    request: FaceRequest
    result: GateResult


def group_seed(seed: int, group: int) -> int:
    """The seed that :func:`fill_quotas` gets for the ``group``-th set of quotas one stage fills (a split of the
    artificial set, a source dataset of the balanced set), from the stage seed. Groups are 1000 apart: each uses
    its seed and the next one (the pictures' seeds, then the prompts' choices), so no two groups share one."""
    return seed + 1000 * group


def attempt_seed(base: int, cell: Cell, attempt: int) -> int:
    emotion, gender, age, ethnicity = cell
    key = [base, BASIC7.index(emotion), GENDERS.index(gender), AGE_GROUPS.index(age), ETHNICITIES.index(ethnicity)]
    return int(np.random.SeedSequence([*key, attempt]).generate_state(1)[0] & 0x7FFFFFFF)


def fill_quotas(
    quotas: dict[Cell, int],
    builder: PromptBuilder,
    backend: Backend,
    gate: Gate,
    seed: int,
    max_attempts_per_image: int,
    on_accept: Callable[[FaceRequest, Image.Image, GateResult], None],
    chunk: int = 64,
    team: Distributed = SINGLE,
) -> list[Attempt]:
    """Every attempt, in order; each accepted picture is handed to ``on_accept`` at once (nothing is
    held in memory). A cell whose budget (``quota * max_attempts_per_image``) runs out stays short: the
    caller reports the deficit.

    A round goes in steps of ``chunk`` requests per process (rounded up to whole backend batches). Under
    ``torchrun`` (``team.world_size`` > 1) every process asks for the same requests, generates and gates its
    :func:`share` of each step and takes the team's verdicts in request order, so all of them count the same
    acceptances, plan the same next round and return what one process returns; only rank 0 receives the
    accepted pictures and calls ``on_accept``, in the order one process would."""
    accepted: dict[Cell, int] = defaultdict(int)
    used: dict[Cell, int] = defaultdict(int)
    attempts: list[Attempt] = []
    round_number = 0
    while True:
        pending: list[FaceRequest] = []
        for cell, quota in quotas.items():
            missing = quota - accepted[cell]
            budget = quota * max_attempts_per_image - used[cell]
            for _ in range(max(0, min(missing, budget))):
                attempt = used[cell]
                used[cell] += 1
                rng = np.random.default_rng(attempt_seed(seed + 1, cell, attempt))
                pending.append(builder.request(*cell, seed=attempt_seed(seed, cell, attempt), attempt=attempt, rng=rng))
        if not pending:
            break
        round_number += 1
        # bounded memory: a chunk of pictures per process at a time (rank 0 receives the accepted ones of the
        # whole team: up to world_size x chunk); whole batches, so that a round's batches are the same whatever
        # the number of processes
        step = -(-chunk // backend.batch_size) * backend.batch_size * team.world_size
        starts = range(0, len(pending), step)
        mine = sum(len(share(min(step, len(pending) - start), backend.batch_size, team)) for start in starts)
        log.info(
            "generate: round %d, %d images asked for; rank %d of %d makes %d",
            round_number,
            len(pending),
            team.rank,
            team.world_size,
            mine,
        )
        for start in starts:
            requests = pending[start : start + step]
            results, pictures = _team_checks(requests, backend, gate, team)
            for index, (request, result) in enumerate(zip(requests, results, strict=True)):
                if result.accepted:
                    accepted[request.cell] += 1
                    if team.main:
                        on_accept(request, pictures[index], result)
                attempts.append(Attempt(request, result))
    return attempts


def share(count: int, batch_size: int, team: Distributed) -> list[int]:
    """The requests of a step of ``count`` that process ``team.rank`` generates: the backend's batches of
    ``batch_size`` dealt round robin, so every batch is one that a single process makes (a batch's make-up
    can change float results) and a process's batches, put together, split into the same batches again.

    >>> share(10, 3, Distributed(rank=1, world_size=2))
    [3, 4, 5, 9]
    """
    starts = range(0, count, batch_size)[team.rank :: team.world_size]
    return [index for start in starts for index in range(start, min(start + batch_size, count))]


def _team_checks(
    requests: list[FaceRequest], backend: Backend, gate: Gate, team: Distributed
) -> tuple[list[GateResult], dict[int, Image.Image]]:
    """Generate and gate this process's share of a step's ``requests``. Returns the team's verdicts in request
    order (on every process) and the accepted pictures by request index (on rank 0; empty elsewhere)."""
    mine = share(len(requests), backend.batch_size, team)
    images = backend.generate([requests[i] for i in mine]) if mine else []
    verdicts, pictures = {}, {}
    for index, image in zip(mine, images, strict=True):
        verdicts[index] = gate.check(image, requests[index].emotion)
        if verdicts[index].accepted:
            pictures[index] = image
    verdicts = {i: result for part in all_gather(verdicts, team) for i, result in part.items()}
    pictures = {i: image for part in gather_to_main(pictures, team) for i, image in part.items()}
    if sorted(verdicts) != list(range(len(requests))):
        raise RuntimeError(f"rank {team.rank}: the team's verdicts cover {len(verdicts)} of {len(requests)} requests")
    return [verdicts[i] for i in range(len(requests))], pictures


def effectiveness(attempts: list[Attempt]) -> dict:
    """Acceptance per emotion (paper 001 Table 11's "prompt effectiveness") and the rejection reasons."""
    per_emotion: dict[str, dict] = {}
    for emotion in BASIC7:
        mine = [a for a in attempts if a.request.emotion == emotion]
        if not mine:
            continue
        reasons: dict[str, int] = defaultdict(int)
        for a in mine:
            if not a.result.accepted:
                reasons[a.result.reason] += 1
        per_emotion[emotion] = {
            "attempts": len(mine),
            "accepted": sum(a.result.accepted for a in mine),
            "acceptance": round(sum(a.result.accepted for a in mine) / len(mine), 4),
            "paper_001_effectiveness": TABLE11_EFFECTIVENESS[emotion],
            "rejected_because": dict(sorted(reasons.items())),
        }
    return per_emotion


def acceptance_by_group(attempts: list[Attempt]) -> dict[str, dict[str, float]]:
    """Acceptance per gender, age group and ethnicity: a gate that rejects some groups more often
    than others skews the demographics of what it lets through."""
    out: dict[str, dict[str, float]] = {}
    for index, (column, values) in enumerate(
        (("gender", GENDERS), ("age_group", AGE_GROUPS), ("ethnicity", ETHNICITIES))
    ):
        out[column] = {}
        for value in values:
            mine = [a.result.accepted for a in attempts if a.request.cell[index + 1] == value]
            if mine:
                out[column][value] = round(sum(mine) / len(mine), 4)
    return out


def shortfall(quotas: dict[Cell, int], attempts: list[Attempt]) -> dict[str, int]:
    """Cells that did not reach their quota: ``"emotion/gender/age/ethnicity" -> missing images``."""
    got: dict[Cell, int] = defaultdict(int)
    for a in attempts:
        got[a.request.cell] += a.result.accepted
    return {"/".join(cell): quota - got[cell] for cell, quota in quotas.items() if got[cell] < quota}
