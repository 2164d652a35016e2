"""``fersynth compare``: "with synthetic data vs without, on the same real test images: did accuracy go up
or down, for which classes and groups, and is the difference real?"

Reads ``fersynth evaluate``'s per-image predictions (one row per seed and image) for a candidate model
and its baseline and writes, per test set:

- mean accuracy and macro-F1 of both over their trials, and the difference;
- a 95% interval of the difference over seeds (seed k of one paired with seed k of the other; Student t)
  and over test images (paired bootstrap of the seed-averaged correctness), with the bootstrap p-value;
- the exact McNemar p-value of every seed pair (the largest is reported: "significant in every pair");
- the per-class F1 difference and, where the test set has demographic columns, the per-group accuracy
  difference;
- a verdict: ``helps`` / ``hurts`` when both intervals exclude zero, else ``no significant difference``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fersynth.atomic import write_json
from fersynth.config import build
from fersynth.evaluate.metrics import mcnemar, mean_interval, paired_bootstrap
from fersynth.log import get_logger
from fersynth.variant import Variant

log = get_logger(__name__)

GROUP_COLUMNS = ("gender", "age_group", "ethnicity")


@dataclass(frozen=True)
class PairConfig:
    baseline: str  # a model name of ``evaluate.models``
    test_sets: tuple[str, ...] = ()  # names of ``evaluate.test_sets``


@dataclass(frozen=True)
class CompareConfig:
    """``params.yaml: compare``: candidate model name -> its baseline and the test sets to compare on."""

    pairs: dict[str, PairConfig] = field(default_factory=dict)
    bootstrap: int = 2000
    seed: int = 0


def compare(config: CompareConfig, evaluated: Path, test_sets: dict[str, str], out: Path) -> dict:
    evaluated = Path(evaluated)
    result: dict[str, dict] = {}
    for candidate, pair in config.pairs.items():
        pair = pair if isinstance(pair, PairConfig) else build(PairConfig, pair)
        block = result.setdefault(f"{candidate}_vs_{pair.baseline}", {})
        for test in pair.test_sets:
            with_ = pd.read_csv(evaluated / "predictions" / candidate / f"{test}.csv")
            without = pd.read_csv(evaluated / "predictions" / pair.baseline / f"{test}.csv")
            groups = _groups(Path(test_sets[test])) if test in test_sets else None
            block[test] = compare_predictions(without, with_, config, groups) | _f1_difference(
                evaluated, candidate, pair.baseline, test
            )
            log.info(
                "compare %s vs %s on %s: %+.4f %s (%s)",
                candidate,
                pair.baseline,
                test,
                block[test]["difference"],
                block[test]["difference_ci95_images"],
                block[test]["verdict"],
            )
    write_json(out, result)
    return result


def compare_predictions(
    baseline: pd.DataFrame, candidate: pd.DataFrame, config: CompareConfig, groups: pd.DataFrame | None = None
) -> dict:
    """``baseline`` and ``candidate``: evaluate's predictions (seed, key, label, predicted, correct)."""
    a, b = _correct_by_seed(baseline), _correct_by_seed(candidate)
    if not a.index.equals(b.index):
        raise ValueError("the two models were evaluated on different test images")
    pairs = list(zip(a.columns, b.columns, strict=False))  # seed k with seed k, as many pairs as the shorter
    per_seed = [float(b[sb].mean() - a[sa].mean()) for sa, sb in pairs]
    seeds = mean_interval(per_seed)
    images = paired_bootstrap(a.mean(axis=1), b.mean(axis=1), n=config.bootstrap, seed=config.seed)
    p_mcnemar = max(mcnemar(a[sa], b[sb])["p_value"] for sa, sb in pairs)
    difference = float(b.to_numpy().mean() - a.to_numpy().mean())
    intervals = [images["ci95"]] + ([seeds["ci95"]] if len(pairs) > 1 else [])
    if all(low > 0 for low, _ in intervals):
        verdict = "helps"
    elif all(high < 0 for _, high in intervals):
        verdict = "hurts"
    else:
        verdict = "no significant difference"
    out = {
        "images": int(len(a)),
        "trials": [int(a.shape[1]), int(b.shape[1])],
        "baseline_accuracy": round(float(a.to_numpy().mean()), 4),
        "accuracy": round(float(b.to_numpy().mean()), 4),
        "difference": round(difference, 4),
        "difference_ci95_seeds": [round(v, 4) for v in seeds["ci95"]],
        "difference_ci95_images": [round(v, 4) for v in images["ci95"]],
        "p_bootstrap": round(images["p_value"], 4),
        "p_mcnemar": round(p_mcnemar, 4),
        "verdict": verdict,
    }
    if groups is not None:
        out["group_accuracy_difference"] = _group_difference(a, b, groups)
    return out


def _correct_by_seed(predictions: pd.DataFrame) -> pd.DataFrame:
    """One column per seed (sorted), one row per image key (sorted): 1.0 where the prediction was right."""
    table = predictions.pivot(index="key", columns="seed", values="correct").astype(float)
    return table.sort_index().reindex(sorted(table.columns), axis=1)


def _groups(variant_dir: Path) -> pd.DataFrame | None:
    manifest = Variant(variant_dir).manifest
    columns = [c for c in GROUP_COLUMNS if c in manifest and manifest[c].notna().any()]
    return manifest.set_index("key")[columns] if columns else None


def _group_difference(a: pd.DataFrame, b: pd.DataFrame, groups: pd.DataFrame) -> dict:
    groups = groups.reindex(a.index)
    out = {}
    for column in groups.columns:
        values = groups[column].fillna("unknown")
        out[column] = {
            str(g): round(float(b[values == g].to_numpy().mean() - a[values == g].to_numpy().mean()), 4)
            for g in sorted(values.unique())
        }
    return out


def _f1_difference(evaluated: Path, candidate: str, baseline: str, test: str) -> dict:
    with_ = json.loads((evaluated / "per_class" / candidate / f"{test}.json").read_text())
    without = json.loads((evaluated / "per_class" / baseline / f"{test}.json").read_text())
    classes = [k for k, v in with_.items() if isinstance(v, dict) and not k.endswith(" avg")]
    return {
        "baseline_macro_f1": round(without["macro avg"]["f1"], 4),
        "macro_f1": round(with_["macro avg"]["f1"], 4),
        "f1_difference": {c: round(with_[c]["f1"] - without[c]["f1"], 4) for c in classes},
    }
