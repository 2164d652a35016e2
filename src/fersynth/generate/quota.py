"""Generate until each cell's quota of gated images is met, or its attempt budget is spent.

A cell is (emotion, gender, age group, ethnicity). Every attempt has its own seed, derived from the
stage seed, the cell and the attempt number, so a run is reproducible and any single image can be made
again from its manifest row. Rounds ask each unfinished cell for exactly what it still lacks; the
backend batches across cells. Every attempt, accepted or not, is kept in the attempts log; acceptance
per emotion is the measured "prompt effectiveness" of paper 001's Table 11.
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
from fersynth.labels import AGE_GROUPS, BASIC7, ETHNICITIES, GENDERS
from fersynth.log import get_logger

log = get_logger(__name__)
Cell = tuple[str, str, str, str]


@dataclass
class Attempt:
    request: FaceRequest
    result: GateResult


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
) -> list[Attempt]:
    """Every attempt, in order; each accepted picture is handed to ``on_accept`` at once (nothing is
    held in memory). A cell whose budget (``quota * max_attempts_per_image``) runs out stays short: the
    caller reports the deficit."""
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
        log.info("generate: round %d, %d images asked for", round_number, len(pending))
        for start in range(0, len(pending), chunk):  # bounded memory: a chunk of pictures at a time
            requests = pending[start : start + chunk]
            for request, image in zip(requests, backend.generate(requests), strict=True):
                result = gate.check(image, request.emotion)
                if result.accepted:
                    accepted[request.cell] += 1
                    on_accept(request, image, result)
                attempts.append(Attempt(request, result))
    return attempts


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
