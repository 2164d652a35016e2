"""``params.yaml: compare``: which model is compared with which baseline, on which test sets, and the rules of
the verdicts (seeds needed, family-wise error rate, power, the known-answer controls)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fersynth.config import above

EXPECTED = ("helps", "hurts", "inconclusive")  # what a known-answer control may expect


@dataclass(frozen=True)
class PairConfig:
    baseline: str  # a model name of ``evaluate.models``
    test_sets: tuple[str, ...] = ()  # names of ``evaluate.test_sets``


@dataclass(frozen=True)
class CompareConfig:
    """``params.yaml: compare``: candidate model name -> its baseline and the test sets to compare on."""

    pairs: dict[str, PairConfig] = field(default_factory=dict)
    min_seeds: int = 5  # seed pairs needed for a verdict
    alpha: float = 0.05  # family-wise error rate (Holm over every verdict in the file)
    power: float = 0.8  # for the minimum detectable effect
    max_mde: float = 0.2  # a test set that cannot detect +-this (at alpha, unadjusted) is "not testable"
    plan_effects: tuple[float, ...] = (0.02, 0.05, 0.1)  # seeds_needed is reported for these differences
    controls: dict[str, str] = field(default_factory=dict)  # pair candidate -> the verdict it must get

    def __post_init__(self) -> None:
        if self.min_seeds < 2:
            raise ValueError(
                f"compare.min_seeds must be at least 2 (training variance needs 2 seeds): {self.min_seeds}"
            )
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ValueError(f"compare.alpha and compare.power must be in (0, 1): {self.alpha}, {self.power}")
        above("compare", 0, max_mde=self.max_mde, plan_effects=self.plan_effects)
        unknown = {c: v for c, v in self.controls.items() if c not in self.pairs or v not in EXPECTED}
        if unknown:
            raise ValueError(f"compare.controls must name pairs and one of {EXPECTED}: {unknown}")
