"""``fersynth generate-augmented``: paper 000's FER2013 + N generated images per class (300 with
Juggernaut XL in the paper), prompts varying age, gender, ethnicity, lighting, angle, obstruction and
blur (its Table 1). Generated pictures are converted to the source's format and go to train only (so
the emotion classifier may gate them); the source's rows, val and test included, are copied byte for byte."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fersynth.atomic import write_json
from fersynth.generate.artificial import all_cells
from fersynth.generate.backends import make_backend
from fersynth.generate.common import (
    GenerationConfig,
    ImageFormat,
    accept_into,
    generation_metrics,
    write_attempts,
)
from fersynth.generate.gate import Gate, GateConfig, gate_checks, split_gates
from fersynth.generate.prompts import PromptBuilder
from fersynth.generate.quota import Cell, acceptance_by_group, effectiveness, fill_quotas, shortfall
from fersynth.log import get_logger, progress
from fersynth.modeling.process_group import setup, teardown, variant_writer
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant

log = get_logger(__name__)


@dataclass(frozen=True)
class AugmentedConfig(GenerationConfig):
    """``configs/fer2013_sdxl.yaml``. ``per_class`` generated train images per emotion, spread evenly
    (in a seeded order) over the 40 gender x age group x ethnicity cells."""

    per_class: int = 300

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.per_class < 0:
            raise ValueError("per_class must be >= 0")


def class_quotas(per_class: int, seed: int) -> dict[Cell, int]:
    """``per_class`` images per emotion over its 40 demographic cells: every cell gets
    ``per_class // 40``, the remainder goes to cells drawn in a seeded order."""
    quotas: dict[Cell, int] = {}
    rng = np.random.default_rng(seed)
    for emotion in BASIC7:
        cells = [c for c in all_cells() if c[0] == emotion]
        base, extra = divmod(per_class, len(cells))
        lucky = set(rng.permutation(len(cells))[:extra].tolist())
        for index, cell in enumerate(cells):
            count = base + (index in lucky)
            if count:
                quotas[cell] = count
    return quotas


def generate_augmented(
    source_dir: Path,
    out_dir: Path,
    config: AugmentedConfig,
    gate_config: GateConfig,
    metrics_path: Path | None = None,
) -> dict:
    """SOURCE's rows as they are plus ``config.per_class`` gated train images per emotion. Under ``torchrun``
    the processes share the generation and rank 0 writes (the other processes return ``{}``)."""
    team = setup(config.backend.device)
    source = Variant(source_dir)
    manifest = source.manifest
    sizes = manifest.loc[manifest["split"] == "train", ["width", "height", "mode"]].value_counts()
    (width, height, mode), _ = next(iter(sizes.items()))  # the source's own format (FER2013: 48 grey)
    image_format = ImageFormat(size=int(width), mode=str(mode))
    if width != height:
        raise ValueError(f"{source.name} train images are {width}x{height}; square formats only")
    backend = make_backend(config.backend)
    gate_configs = split_gates(gate_config, ["train"])
    gate = Gate(gate_configs["train"])
    quotas = class_quotas(config.per_class, config.seed)
    dataset = str(manifest["dataset"].iloc[0])
    with variant_writer(team, out_dir, report_name="generate.json", inputs=(source_dir,)) as writer:
        rows = source.iter_bytes() if team.main else ()  # the other processes only generate
        for row, data in progress(rows, desc=f"copy {source.name}", total=len(manifest)):
            writer.copy(row, data)
        on_accept = accept_into(writer, backend, "train", dataset, image_format)
        builder = PromptBuilder(config.prompts)
        attempts = fill_quotas(
            quotas, builder, backend, gate, config.seed, config.max_attempts_per_image, on_accept, team=team
        )
        if team.main:
            write_attempts(writer.layout.root / "gate.csv", {"train": attempts})
        report = writer.commit(
            report_extra={
                "source": str(source_dir),
                "backend": backend.name,
                "model": backend.model,
                "per_class": config.per_class,
                **({"backend_settings": backend.settings} if backend.settings else {}),
                "gate": {split: gate_checks(c) for split, c in gate_configs.items()},
                "format": {"size": image_format.size, "mode": image_format.mode},
                "attempts": len(attempts),
                "accepted": sum(a.result.accepted for a in attempts),
                "short_cells": shortfall(quotas, attempts),
                "prompt_effectiveness": effectiveness(attempts),
                "acceptance_by_group": acceptance_by_group(attempts),
            }
        )
    teardown(team)
    if not team.main:
        return {}
    if metrics_path is not None:
        write_json(metrics_path, generation_metrics(report, len(report["short_cells"])))
    log.info(
        "%s: copied %d source rows, generated %d accepted of %d attempts (%d short cells)",
        out_dir,
        len(manifest),
        report["accepted"],
        report["attempts"],
        len(report["short_cells"]),
    )
    return report
