"""``fersynth generate-artificial``: paper 001's all-artificial FER dataset (Table 7), generated over
every emotion x gender x age group x ethnicity cell with its own train and test splits. Labels come
from the prompt; only pictures that pass the gate are kept (the emotion classifier gates train rows only)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from fersynth.atomic import write_json
from fersynth.generate.backends import make_backend
from fersynth.generate.common import GenerationConfig, accept_into, generation_metrics, write_attempts
from fersynth.generate.gate import Gate, GateConfig, gate_checks, split_gates
from fersynth.generate.prompts import PromptBuilder
from fersynth.generate.quota import Cell, acceptance_by_group, effectiveness, fill_quotas, group_seed, shortfall
from fersynth.log import get_logger
from fersynth.modeling.process_group import setup, teardown, variant_writer
from fersynth.variants.labels import AGE_GROUPS, BASIC7, ETHNICITIES, GENDERS

log = get_logger(__name__)


@dataclass(frozen=True)
class ArtificialConfig(GenerationConfig):
    """``configs/sd_artificial.yaml``. ``per_cell``: images per cell and split (paper 001 Table 7: test
    240 per emotion = 6 per cell of 40; train 550-1,492 per emotion)."""

    per_cell: dict[str, int] = field(default_factory=lambda: {"train": 2, "test": 1})

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.per_cell) - {"train", "val", "test"}
        if unknown or any(int(v) < 0 for v in self.per_cell.values()):
            raise ValueError(f"per_cell: splits train/val/test with counts >= 0, got {self.per_cell}")


def all_cells() -> list[Cell]:
    return list(itertools.product(BASIC7, GENDERS, AGE_GROUPS, ETHNICITIES))


def generate_artificial(
    out_dir: Path,
    config: ArtificialConfig,
    gate_config: GateConfig,
    metrics_path: Path | None = None,
    cells: list[Cell] | None = None,
) -> dict:
    """Generate ``per_cell`` gated images for every cell (default: all 280) and split. Under ``torchrun`` the
    processes share the work and rank 0 writes (the other processes return ``{}``)."""
    cells = cells or all_cells()
    team = setup(config.backend.device)
    backend = make_backend(config.backend)
    builder = PromptBuilder(config.prompts)
    gate_configs = split_gates(gate_config, sorted(config.per_cell))
    attempts = {}
    with variant_writer(team, out_dir, report_name="generate.json") as writer:
        for index, (split, count) in enumerate(sorted(config.per_cell.items())):
            quotas = dict.fromkeys(cells, int(count))
            on_accept = accept_into(writer, backend, split, "sd_artificial", config.format)
            gate = Gate(gate_configs[split])
            attempts[split] = fill_quotas(
                quotas,
                builder,
                backend,
                gate,
                group_seed(config.seed, index),
                config.max_attempts_per_image,
                on_accept,
                team=team,
            )
        every = [a for split_attempts in attempts.values() for a in split_attempts]
        deficits = {s: shortfall(dict.fromkeys(cells, int(c)), attempts[s]) for s, c in config.per_cell.items()}
        report = {
            "backend": backend.name,
            "model": backend.model,
            "attempts": len(every),
            "accepted": sum(a.result.accepted for a in every),
            "per_cell": dict(config.per_cell),
            **({"backend_settings": backend.settings} if backend.settings else {}),
            "gate": {split: gate_checks(c) for split, c in gate_configs.items()},
            "short_cells": {s: d for s, d in deficits.items() if d},
            "prompt_effectiveness": effectiveness(every),
            "acceptance_by_group": acceptance_by_group(every),
        }
        if team.main:
            write_attempts(writer.layout.root / "gate.csv", attempts)
        report = writer.commit(report_extra=report)
    teardown(team)
    if not team.main:
        return {}
    if metrics_path is not None:
        write_json(metrics_path, generation_metrics(report, {s: len(d) for s, d in report["short_cells"].items()}))
    log.info(
        "sd_artificial: %d attempts, %d accepted; short cells: %s",
        report["attempts"],
        report["accepted"],
        {s: len(d) for s, d in report["short_cells"].items()},
    )
    return report
