"""``fersynth balanced-set``: paper 001's balanced, unbiased evaluation set (III.B, Tables 4-6; the
paper calls it the evaluator).

From the **test split** of each source (relabelled FER2013, NHFI, AffectNet, with demographics predicted
by ``demographics-predict``) take ``k`` images per emotion x gender x age group x ethnicity cell (280 cells): the
most confident demographic predictions first (paper 001 chose by eye). Cells a source cannot fill are
completed with gated generated faces made with that cell's prompt and converted to that source's format
(paper 001: 512 RGB -> 224 grey for NHFI, 48 grey for FER2013); the gate checks image quality and the
face only, never the emotion classifier (a test set must not be chosen by a model). Outputs: the variant (every row
``split = test``, ``dataset`` = the source whose format it has), the deficit table (Table 5) and the final
table (Table 6) as metrics. Its suite checks exact balance and that no balanced-set picture is in any
training variant's train or val split.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from fersynth.atomic import write_json
from fersynth.config import at_least, build
from fersynth.generate.artificial import all_cells
from fersynth.generate.backends import make_backend
from fersynth.generate.common import GenerationConfig, ImageFormat, accept_into, write_attempts
from fersynth.generate.convert import FORMATS
from fersynth.generate.gate import Gate, GateConfig, gate_checks, split_gates
from fersynth.generate.prompts import PromptBuilder
from fersynth.generate.quota import Cell, acceptance_by_group, effectiveness, fill_quotas, group_seed, shortfall
from fersynth.log import get_logger
from fersynth.modeling.process_group import setup, teardown, variant_writer
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant

log = get_logger(__name__)
CELL_COLUMNS = ["emotion", "gender", "age_group", "ethnicity"]


@dataclass(frozen=True)
class BalancedSetConfig(GenerationConfig):
    """``configs/balanced_set.yaml``. ``per_cell``: images per cell per source (paper 001: 2, so 560 per
    source and 1,680 in all)."""

    per_cell: int = 2
    max_attempts_per_image: int = 10
    datasets: tuple[str, ...] = ("fer2013", "nhfi", "affectnet")
    generate: bool = True  # False: report the deficit and keep the set short (no generator available)
    gate: dict[str, Any] = field(default_factory=dict)  # the shared `gate` params overridden for the balanced set

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("balanced_set", 1, per_cell=self.per_cell)
        build(GateConfig, self.gate, "balanced_set.gate")  # names and types of the overrides, before any work
        if self.gate.get("classifier"):
            raise ValueError(
                "balanced_set.gate.classifier: the balanced set is a test set; no emotion classifier may choose it"
            )


def select_real(test: pd.DataFrame, per_cell: int) -> pd.DataFrame:
    """Up to ``per_cell`` rows per cell: highest gender x ethnicity confidence first, then by key."""
    ranked = test.assign(
        _confidence=test["gender_confidence"].fillna(0) * test["ethnicity_confidence"].fillna(0)
    ).sort_values(["_confidence", "key"], ascending=[False, True])
    return ranked.groupby(CELL_COLUMNS, sort=True).head(per_cell).drop(columns="_confidence").sort_values("key")


def table(counts: dict[str, dict[str, int]]) -> dict:
    """Paper-style table: per dataset and emotion, with totals per dataset, per emotion and overall."""
    out = {d: {e: int(per.get(e, 0)) for e in BASIC7} | {"total": int(sum(per.values()))} for d, per in counts.items()}
    out["total"] = {e: sum(out[d][e] for d in counts) for e in BASIC7}
    out["total"]["total"] = sum(out[d]["total"] for d in counts)
    return out


def build_balanced_set(
    sources: dict[str, Path],
    out_dir: Path,
    config: BalancedSetConfig,
    gate_config: GateConfig,
    metrics_dir: Path | None = None,
) -> dict:
    """The balanced-set variant from ``sources`` (name -> variant with demographics) and its tables. Under
    ``torchrun`` the processes share the generation and rank 0 writes (the other processes return ``{}``)."""
    missing = set(config.datasets) - set(sources)
    if missing:
        raise ValueError(f"balanced-set: no variant given for {sorted(missing)}")
    builder = PromptBuilder(config.prompts)
    backend = make_backend(config.backend)
    test_gate = split_gates(replace(gate_config, **config.gate), ["test"])["test"]
    gate = Gate(test_gate)
    team = setup(config.backend.device)
    selected_counts, deficit_counts, generated_counts = {}, {}, {}
    attempts, short = {}, {}
    with variant_writer(team, out_dir, report_name="balanced_set.json", inputs=tuple(sources.values())) as writer:
        for index, dataset in enumerate(config.datasets):
            variant = Variant(sources[dataset])
            manifest = variant.manifest
            test = manifest[(manifest["split"] == "test") & manifest["emotion"].isin(BASIC7)]
            if test[["gender", "age_group", "ethnicity"]].isna().any().any():
                raise ValueError(f"{sources[dataset]}: test rows without demographics; run demographics-predict first")
            chosen = select_real(test, config.per_cell)
            for row, data in variant.iter_bytes(chosen):
                row = row.copy()
                row["key"] = f"{dataset}/{row['key']}"
                writer.copy(row, data)
            have = chosen.groupby(CELL_COLUMNS).size()
            quotas: dict[Cell, int] = {}
            for cell in all_cells():
                lacking = config.per_cell - int(have.get(cell, 0))
                if lacking > 0:
                    quotas[cell] = lacking
            selected_counts[dataset] = chosen["emotion"].value_counts().to_dict()
            deficit_counts[dataset] = {e: sum(n for c, n in quotas.items() if c[0] == e) for e in BASIC7}
            if config.generate and quotas:
                size, mode = FORMATS[dataset]
                on_accept = accept_into(writer, backend, "test", dataset, ImageFormat(size, mode))
                tries = fill_quotas(
                    quotas,
                    builder,
                    backend,
                    gate,
                    group_seed(config.seed, index),
                    config.max_attempts_per_image,
                    on_accept,
                    team=team,
                )
                attempts[dataset] = tries
                short[dataset] = shortfall(quotas, tries)
            else:
                short[dataset] = {"/".join(c): n for c, n in quotas.items()}
            generated_counts[dataset] = {
                e: deficit_counts[dataset][e] - sum(n for c, n in short[dataset].items() if c.split("/")[0] == e)
                for e in BASIC7
            }
            log.info(
                "balanced-set %s: %d real test images chosen, %d cells short, %d generated",
                dataset,
                len(chosen),
                len(quotas),
                sum(generated_counts[dataset].values()),
            )
        if attempts and team.main:
            write_attempts(writer.layout.root / "gate.csv", attempts)
        every = [a for tries in attempts.values() for a in tries]
        final = {d: {e: selected_counts[d].get(e, 0) + generated_counts[d][e] for e in BASIC7} for d in config.datasets}
        report = writer.commit(
            report_extra={
                "per_cell": config.per_cell,
                "selected_real": table(selected_counts),  # paper 001 Table 4
                "deficit": table(deficit_counts),  # Table 5
                "generated": table(generated_counts),
                "final": table(final),  # Table 6
                "still_short": {d: s for d, s in short.items() if s},
                "backend": backend.name,
                **({"backend_settings": backend.settings} if backend.settings else {}),
                "gate": {"test": gate_checks(test_gate)},
                "prompt_effectiveness": effectiveness(every) if every else {},
                "acceptance_by_group": acceptance_by_group(every) if every else {},
            }
        )
    teardown(team)
    if not team.main:
        return {}
    if metrics_dir is not None:
        for name in ("selected_real", "deficit", "final", "gate"):
            write_json(Path(metrics_dir) / f"{name}.json", report[name])
    if report["still_short"]:
        log.warning("balanced-set: cells still short (the suite will fail): %s", report["still_short"])
    return report
