"""``fersynth compare``: "with synthetic data vs without, on the same test images: did accuracy go up or
down, for which classes and groups, and would the answer survive another seed and another test set?"

Reads ``fersynth evaluate``'s per-image predictions (one row per seed and image) of a candidate model and
its baseline and writes, per pair and test set (``metrics/compare.json``, scalars so that ``dvc exp show``
lists them):

- mean accuracy of both over their trials and the difference, with a 95% interval and p-value that count
  training variance (seeds) and test-image sampling together (:mod:`fersynth.compare.stats`: crossed seeds x images);
  seed k of the candidate is paired with seed k of the baseline;
- ``p_holm``: the p-value Holm-corrected over every comparison in the file that is tested, and ``mde``,
  the smallest difference this many seeds and images could detect (80% power, strictest Holm level);
- a verdict: ``helps`` / ``hurts`` when the Holm-corrected p-value is below ``alpha``, else
  ``inconclusive at +-X points``; ``too few seeds`` below ``min_seeds`` seed pairs;
- the same, separately, for the real and the generated rows of a test set that mixes both (the balanced set);
  the mixed set as a whole is then described, not tested (it would count its own parts twice in the family);
- ``identical predictions: no difference to test`` (or ``same images right and wrong ...``) and no place in
  the Holm family where the two models score every image alike in every seed pair: the difference is exactly
  0 with no spread, so there is no variance to test against (a t test would claim it "detects +-0.0 pts");
- ``not testable (...)`` and no place in the Holm family for a test set that cannot answer: one subject (its
  images are frames of a few clips, not independent draws) or a minimum detectable effect at ``alpha`` above
  ``max_mde``; such a set would only widen the family and weaken every other test;
- ``seeds_needed``: how many seed pairs the same test images need to detect +-2, +-5 and +-10 points with
  ``power`` at the family's strictest level (from the measured variance components; ``None``: more seeds
  alone cannot, the test set is too small);
- per class (accuracy on the class's images, i.e. recall) and per demographic group: difference and 95%
  interval, unadjusted and descriptive; the per-class F1 difference.

``metrics/compare/differences.json`` holds the same differences as records for the DVC plot (difference
with interval per pair, test set, class and group).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from fersynth.atomic import write_json
from fersynth.compare.config import CompareConfig, PairConfig
from fersynth.compare.records import check_controls, plot_records, sweep_records
from fersynth.compare.stats import (
    Difference,
    crossed_difference,
    holm,
    minimum_detectable_effect,
    seeds_needed,
    verdict,
)
from fersynth.config import build
from fersynth.evaluate.origin import real_and_generated
from fersynth.log import get_logger
from fersynth.paths import EvaluateLayout
from fersynth.variants.files import MAX_CSV_BYTES, open_input, read_json_bounded
from fersynth.variants.variant import Variant

log = get_logger(__name__)

GROUP_COLUMNS = ("gender", "age_group", "ethnicity")
MIN_IMAGES = 20  # fewer test images give no interval or verdict (a t interval on 3 images leaves [-1, 1])
IDENTICAL = "identical predictions: no difference to test"
SAME_SCORES = "same images right and wrong in every seed pair: no difference to test"


@dataclass
class _Tested:
    """One comparison that may get a verdict: where its result goes and its statistics."""

    target: dict
    result: Difference | None
    seeds: int
    untested: str = ""  # the verdict of a comparison kept out of the Holm family (described, not tested)


def compare(
    config: CompareConfig,
    evaluated: Path,
    test_sets: dict[str, str],
    out: Path,
    plots_dir: Path | None = None,
    train_metrics: Path | None = None,
) -> dict:
    """``plots_dir`` gets ``differences.json`` (every scope), ``sweep.json`` (one record per pair and test
    set with the candidate's synthetic training rows, read from ``train_metrics/<candidate>.json``: the x of
    a sweep curve across experiments) and, with ``config.controls``, ``controls.json`` (each known-answer
    control's verdict against the one it must get: :func:`check_controls`)."""
    layout = EvaluateLayout(Path(evaluated))
    result: dict[str, dict] = {}
    family: list[_Tested] = []
    for candidate, pair in config.pairs.items():
        pair = pair if isinstance(pair, PairConfig) else build(PairConfig, pair)
        block = result.setdefault(f"{candidate}_vs_{pair.baseline}", {})
        for test in pair.test_sets:
            with_ = _predictions(layout.predictions(candidate, test))
            without = _predictions(layout.predictions(pair.baseline, test))
            rows = _test_rows(Path(test_sets[test])) if test in test_sets else None
            report = read_json_bounded(layout.per_class(candidate, test), what="per-class report")
            baseline_report = read_json_bounded(layout.per_class(pair.baseline, test), what="per-class report")
            classes = _classes(report)
            block[test], tested = compare_predictions(without, with_, config, rows, classes)
            block[test] |= _f1_difference(report, baseline_report)
            family += tested
    decide(family, config)
    for name, block in result.items():
        for test, entry in block.items():
            log.info(
                "compare %s on %s: %+.4f [%s, %s] over %d seed pairs x %d images: %s",
                name, test, entry["difference"], entry["difference_low"], entry["difference_high"],
                entry["seeds"], entry["images"], entry["verdict"],
            )  # fmt: skip
    write_json(out, result)
    if config.controls and plots_dir is not None:
        write_json(Path(plots_dir) / "controls.json", check_controls(result, config))
    if plots_dir is not None:
        write_json(Path(plots_dir) / "differences.json", plot_records(result))
        write_json(Path(plots_dir) / "sweep.json", sweep_records(result, config, train_metrics))
    return result


def compare_predictions(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    config: CompareConfig,
    rows: pd.DataFrame | None = None,
    classes: tuple[str, ...] = (),
) -> tuple[dict, list[_Tested]]:
    """``baseline`` and ``candidate``: evaluate's predictions (seed, key, label, predicted, correct);
    ``rows``: the test set's manifest rows by key (synthetic flag, demographics). Returns the entry (verdicts
    still to be decided over the whole family) and the comparisons that get a verdict."""
    a, b = _by_seed(baseline), _by_seed(candidate)
    if not a.index.equals(b.index):
        raise ValueError("the two models were evaluated on different test images")
    trials = [int(a.shape[1]), int(b.shape[1])]
    # seed k with seed k: the seeds both trained (same initialisation and batches); the others are not used
    shared = [seed for seed in a.columns if seed in set(b.columns)]
    if not shared:  # no seed in common (the null control trains other seeds): pair them in order
        pairs = min(len(a.columns), len(b.columns))
        shared_a, shared_b = list(a.columns[:pairs]), list(b.columns[:pairs])
    else:
        shared_a = shared_b = shared
    a, b = a[shared_a], b[shared_b]
    seeds = len(shared_a)
    differences = b.to_numpy() - a.to_numpy()  # images x seed pairs
    same = _by_seed(candidate, "predicted")[shared_b].to_numpy() == _by_seed(baseline, "predicted")[shared_a].to_numpy()
    entry = {
        "trials": trials,
        "baseline_accuracy": round(float(a.to_numpy().mean()), 4),
        "accuracy": round(float(b.to_numpy().mean()), 4),
        "per_seed_difference": {
            f"{sa}-{sb}": round(float(differences[:, k].mean()), 4)
            for k, (sa, sb) in enumerate(zip(a.columns, b.columns, strict=True))
        },
    }
    if rows is not None:
        missing = a.index.difference(rows.index)
        if len(missing):
            raise ValueError(
                f"{len(missing)} predicted test images are not in the test set's manifest, e.g. {missing[0]}"
            )
        rows = rows.reindex(a.index)
    parts = real_and_generated(rows) if rows is not None else {}
    mixed = "descriptive (mixes real and generated faces: its parts are tested)" if parts else ""
    tested = [_summary(entry, differences, seeds, _no_difference(differences, same) or mixed or _one_subject(rows))]
    for scope, mask in parts.items():
        entry[scope] = {
            "baseline_accuracy": round(float(a[mask].to_numpy().mean()), 4),
            "accuracy": round(float(b[mask].to_numpy().mean()), 4),
        }
        part, part_same = differences[mask.to_numpy()], same[mask.to_numpy()]
        tested.append(_summary(entry[scope], part, seeds, _no_difference(part, part_same) or _one_subject(rows[mask])))
    labels = baseline.drop_duplicates("key").set_index("key")["label"].reindex(a.index)
    entry["class_difference"] = {
        (classes[int(c)] if int(c) < len(classes) else str(c)): _interval(differences[(labels == c).to_numpy()])
        for c in sorted(labels.unique())
    }
    if rows is not None:
        entry["group_difference"] = {
            column: {str(g): _interval(differences[(values == g).to_numpy()]) for g in sorted(values.unique())}
            for column in GROUP_COLUMNS
            if column in rows and rows[column].notna().any()
            for values in [rows[column].fillna("unknown")]
        }
    return entry, tested


def _no_difference(differences: np.ndarray, same_predictions: np.ndarray) -> str:
    """The verdict of two models that score every image alike in every seed pair: their difference is exactly
    0 with no spread over seeds or images, so its standard error and minimum detectable effect come out 0 and
    a t test would read "inconclusive (detects +-0.0 pts)". Nothing varies: there is nothing to test."""
    if differences.size == 0 or differences.any():
        return ""
    return IDENTICAL if same_predictions.all() else SAME_SCORES


def _one_subject(rows: pd.DataFrame | None) -> str:
    """The verdict of a test set whose images all show one subject (CASME II's frames): not testable."""
    if rows is None or "subject" not in rows or rows["subject"].isna().all():
        return ""
    return "not testable (one subject)" if rows["subject"].dropna().nunique() < 2 else ""


def _summary(target: dict, differences: np.ndarray, seeds: int, untested: str = "") -> _Tested:
    target |= {"images": int(differences.shape[0]), "seeds": int(seeds)}
    target["difference"] = round(float(differences.mean()), 4) if differences.size else 0.0
    if untested in (IDENTICAL, SAME_SCORES):  # exactly 0, and no interval could be wider
        target |= {"difference_low": 0.0, "difference_high": 0.0}
        return _Tested(target, None, seeds, untested)
    if seeds < 2 or differences.shape[0] < MIN_IMAGES:
        target |= {"difference_low": None, "difference_high": None}
        return _Tested(target, None, seeds, untested)
    result = crossed_difference(differences.T)
    target |= {
        "difference_low": round(result.low, 4),
        "difference_high": round(result.high, 4),
        "p_value": round(result.p_value, 4),
        "seed_share": round(result.seed_share, 3),
    }
    return _Tested(target, result, seeds, untested)


def decide(family: list[_Tested], config: CompareConfig) -> None:
    """Holm over every comparison with enough seeds that can answer (see :func:`_untestable`); the minimum
    detectable effect and the seeds needed at Holm's strictest level."""
    # the test set's own reasons (one subject, a mixed set tested by its parts) come first: no seed count helps
    design = {id(t): t.untested for t in family}
    for tested in family:
        tested.untested = tested.untested or _untestable(tested, config)
    eligible = [t for t in family if t.result is not None and t.seeds >= config.min_seeds and not t.untested]
    adjusted = holm([t.result.p_value for t in eligible]) if eligible else []
    strictest = config.alpha / max(len(eligible), 1)
    for tested, p in zip(eligible, adjusted, strict=True):
        result = tested.result
        mde = minimum_detectable_effect(result.se, result.df, strictest, config.power)
        # Bonferroni interval: when it excludes zero, Holm rejects too (Holm may also reject when it does not)
        half = float(scipy_stats.t.ppf(1 - strictest / 2, result.df) * result.se)
        tested.target |= {
            "difference_low_adjusted": round(result.difference - half, 4),
            "difference_high_adjusted": round(result.difference + half, 4),
            "p_holm": round(p, 4),
            "mde": round(mde, 4),
            "verdict": verdict(result.difference, p, mde, config.alpha),
        }
    decided = {id(t) for t in eligible}
    for tested in family:
        if tested.result is not None:
            tested.target["seeds_needed"] = {
                f"{100 * effect:g}": seeds_needed(tested.result, effect, strictest, config.power)
                for effect in config.plan_effects
            }
        if id(tested) in decided:
            continue
        # the same keys as a decided comparison (the report and `dvc exp show` columns), with no value
        for key in ("p_value", "seed_share", "difference_low_adjusted", "difference_high_adjusted", "p_holm", "mde"):
            tested.target.setdefault(key, None)
        tested.target.setdefault("seeds_needed", {f"{100 * effect:g}": None for effect in config.plan_effects})
        if design[id(tested)]:
            tested.target["verdict"] = design[id(tested)]
        elif tested.seeds < config.min_seeds:
            tested.target["verdict"] = f"too few seeds ({tested.seeds} < {config.min_seeds})"
        elif tested.result is None:
            tested.target["verdict"] = f"too few images ({tested.target['images']} < {MIN_IMAGES})"
        else:
            tested.target["verdict"] = tested.untested


def _untestable(tested: _Tested, config: CompareConfig) -> str:
    """Why a comparison with a result cannot answer: its minimum detectable effect at ``alpha`` (unadjusted,
    so that the bound does not depend on the family it would join) is above ``max_mde``."""
    if tested.result is None:
        return ""
    mde = minimum_detectable_effect(tested.result.se, tested.result.df, config.alpha, config.power)
    if mde <= config.max_mde:
        return ""
    return f"not testable (detects only +-{100 * mde:.1f} pts > {100 * config.max_mde:g})"


def _interval(differences: np.ndarray) -> dict:
    """Difference with its 95% crossed-design interval (unadjusted; descriptive)."""
    out = {"images": int(differences.shape[0]), "difference": round(float(differences.mean()), 4)}
    if differences.shape[0] >= MIN_IMAGES and differences.shape[1] >= 2:
        result = crossed_difference(differences.T)
        out |= {"low": round(result.low, 4), "high": round(result.high, 4)}
    else:
        out |= {"low": None, "high": None}
    return out


def _by_seed(predictions: pd.DataFrame, column: str = "correct") -> pd.DataFrame:
    """One column per seed (sorted), one row per image key (sorted): 1.0 where the prediction was right
    (``column="predicted"``: the class predicted)."""
    table = predictions.pivot(index="key", columns="seed", values=column).astype(float)
    if table.isna().to_numpy().any():
        seeds = sorted(table.columns[table.isna().any()].tolist())
        raise ValueError(f"seeds {seeds} have no prediction for some test images: evaluate them all again")
    return table.sort_index().reindex(sorted(table.columns), axis=1)


def _predictions(path: Path) -> pd.DataFrame:
    """An ``evaluate`` predictions CSV (from this checkout or a DVC remote): a regular file of bounded size."""
    with open_input(path, MAX_CSV_BYTES, "predictions") as handle:
        return pd.read_csv(handle)


def _test_rows(variant_dir: Path) -> pd.DataFrame:
    manifest = Variant(variant_dir).manifest
    columns = [c for c in ("synthetic", "subject", *GROUP_COLUMNS) if c in manifest]
    return manifest.drop_duplicates("key").set_index("key")[columns]


def _classes(report: dict) -> tuple[str, ...]:
    """Class names of a per-class report (evaluate's), in label order."""
    return tuple(k for k, v in report.items() if isinstance(v, dict) and not k.endswith(" avg"))


def _f1_difference(with_: dict, without: dict) -> dict:
    return {
        "baseline_macro_f1": round(without["macro avg"]["f1"], 4),
        "macro_f1": round(with_["macro avg"]["f1"], 4),
        "f1_difference": {c: round(with_[c]["f1"] - without[c]["f1"], 4) for c in _classes(with_)},
    }
