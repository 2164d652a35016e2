"""What ``fersynth compare`` writes beside ``metrics/compare.json`` for the DVC plots and the known-answer check:
one record per difference (``differences.json``), one per pair and test set with its synthetic training rows
(``sweep.json``) and each control's verdict against the one it must get (``controls.json``)."""

from __future__ import annotations

from pathlib import Path

from fersynth.compare.config import CompareConfig, PairConfig
from fersynth.log import get_logger
from fersynth.variants.files import read_json_bounded

log = get_logger(__name__)


def check_controls(result: dict, config: CompareConfig) -> dict:
    """Known-answer controls: each control pair's verdicts on every test set against what it must get (a
    planted benefit ``helps``, a planted harm ``hurts``, a null ``inconclusive``). ``found`` is false where
    the rule missed what is there, or saw what is not: then the rule, or the recipe, is broken."""
    checked = {}
    for candidate, expected in config.controls.items():
        pair = config.pairs[candidate]
        baseline = pair.baseline if isinstance(pair, PairConfig) else pair["baseline"]
        for test, entry in result[f"{candidate}_vs_{baseline}"].items():
            verdict = entry["verdict"]
            found = verdict.startswith(expected)
            checked[f"{candidate}_on_{test}"] = {"expected": expected, "verdict": verdict, "found": found}
            if not found:
                log.warning("compare: control %s on %s: expected %s, got %s", candidate, test, expected, verdict)
    return checked


def plot_records(result: dict) -> list[dict]:
    """One record per pair x test set x scope (all, real, generated, class:<c>, <group column>:<g>)."""
    records = []
    for pair, block in result.items():
        for test, entry in block.items():
            scopes = [("all", entry, "difference_low", "difference_high")]
            scopes += [(s, entry[s], "difference_low", "difference_high") for s in ("real", "generated") if s in entry]
            scopes += [(f"class:{c}", v, "low", "high") for c, v in entry.get("class_difference", {}).items()]
            scopes += [
                (f"{column}:{g}", v, "low", "high")
                for column, groups in entry.get("group_difference", {}).items()
                for g, v in groups.items()
            ]
            records += [
                {
                    "comparison": f"{pair} on {test}",
                    "scope": scope,
                    "difference": values["difference"],
                    "low": values[low],
                    "high": values[high],
                    # class and group intervals are unadjusted and many: descriptive, never a verdict
                    "verdict": values.get("verdict", "descriptive (unadjusted)"),
                    "p_holm": values.get("p_holm"),
                }
                for scope, values, low, high in scopes
                if values.get(low) is not None
            ]
    return records


def sweep_records(result: dict, config: CompareConfig, train_metrics: Path | None) -> list[dict]:
    """One record per pair x test set: the candidate's synthetic training rows and the overall difference."""
    records = []
    for candidate, pair in config.pairs.items():
        baseline = pair.baseline if isinstance(pair, PairConfig) else pair["baseline"]
        synthetic = None
        metrics_file = Path(train_metrics) / f"{candidate}.json" if train_metrics else None
        if metrics_file is not None and metrics_file.exists():
            synthetic = read_json_bounded(metrics_file, what="training metrics").get("rows", {}).get("synthetic_train")
        for test, entry in result[f"{candidate}_vs_{baseline}"].items():
            records.append(
                {
                    "comparison": f"{candidate}_vs_{baseline} on {test}",
                    "synthetic_train": synthetic,
                    "difference": entry["difference"],
                    "low": entry["difference_low"],
                    "high": entry["difference_high"],
                    "verdict": entry["verdict"],
                }
            )
    return records
