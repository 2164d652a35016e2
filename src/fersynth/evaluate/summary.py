"""``fersynth summary``: the few numbers a reader of ``dvc exp show`` (or the VS Code extension, or Studio) needs
to answer the question, in two small files that ``dvc.yaml`` declares as its only ``metrics``:

- ``comparisons.json``: per compared pair and tested scope (a test set, or the real / generated part of one
  that mixes both) the verdict first, then the difference, its 95% interval, the Holm-adjusted p-value and
  the seed pairs; the detail (per class, per group, per seed, power) stays in ``metrics/compare.json``;
- ``experiments.json``: per trained experiment its test accuracy and macro-F1 (means over seeds), its HOG +
  logistic-regression floor on the same test rows, and the number of seeds; the per-epoch history and the
  per-trial rows stay in ``metrics/train/<experiment>.json``.

Both are pure functions of the detailed files, so they cannot disagree with them.
"""

from __future__ import annotations

import json
from pathlib import Path

from fersynth.atomic import write_json
from fersynth.log import get_logger

log = get_logger(__name__)

UNTESTED = ("descriptive",)  # a mixed test set whose parts carry the verdicts


def comparison_summary(compared: dict) -> dict:
    """``{pair: {scope: {verdict, difference, low, high, p_holm, seeds}}}`` for every scope that was judged;
    a mixed test set contributes its ``<test>_real`` and ``<test>_generated`` parts instead of itself."""
    summary: dict[str, dict] = {}
    for pair, tests in sorted(compared.items()):
        if not isinstance(tests, dict):
            continue
        scopes = {}
        for test, entry in sorted(tests.items()):
            if not str(entry.get("verdict", "")).startswith(UNTESTED):
                scopes[test] = _line(entry)
            for part in ("real", "generated"):
                if isinstance(entry.get(part), dict):
                    scopes[f"{test}_{part}"] = _line(entry[part])
        summary[pair] = scopes
    return summary


def experiment_summary(train_metrics: dict[str, dict]) -> dict:
    """``{experiment: {accuracy, macro_f1, floor, seeds}}`` from each ``metrics/train/<experiment>.json``."""
    return {
        name: {
            "accuracy": metrics.get("test_accuracy"),
            "macro_f1": metrics.get("test_macro_f1"),
            "floor": (metrics.get("floor") or {}).get("test_accuracy"),
            "seeds": len(metrics.get("seeds") or metrics.get("trials") or ()) or 1,
        }
        for name, metrics in sorted(train_metrics.items())
    }


def summarize(compare_path: Path, train_dir: Path, out_dir: Path) -> dict:
    """Read ``compare.json`` and ``<train_dir>/*.json``; write ``comparisons.json`` and ``experiments.json``
    under ``out_dir``."""
    compared = json.loads(Path(compare_path).read_text())
    trained = {p.stem: json.loads(p.read_text()) for p in sorted(Path(train_dir).glob("*.json"))}
    comparisons, experiments = comparison_summary(compared), experiment_summary(trained)
    write_json(Path(out_dir) / "comparisons.json", comparisons, sort_keys=False)
    write_json(Path(out_dir) / "experiments.json", experiments, sort_keys=False)
    verdicts = [s["verdict"] for scopes in comparisons.values() for s in scopes.values()]
    log.info(
        "summary: read %d comparisons and %d experiments; wrote %d verdicts (%d helps, %d hurts)",
        len(comparisons), len(experiments), len(verdicts),
        sum(v == "helps" for v in verdicts), sum(v == "hurts" for v in verdicts),
    )  # fmt: skip
    return {"comparisons": comparisons, "experiments": experiments}


def _line(entry: dict) -> dict:
    # the verdict first: `dvc exp show` lists columns in file order
    return {
        "verdict": entry.get("verdict"),
        "difference": entry.get("difference"),
        "low": entry.get("difference_low"),
        "high": entry.get("difference_high"),
        "p_holm": entry.get("p_holm"),
        "seeds": entry.get("seeds"),
    }
