"""The result tables of README.md and docs/*.md, rendered from the metrics files: every number there comes from a
file that ``dvc repro`` (or a benchmark) wrote, so the pages and the metrics cannot disagree.

Each table sits between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``. ``fersynth results --write``
refreshes them after a ``dvc repro``; ``tests/test_results.py`` fails when a committed page differs from what the
committed metrics render.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fersynth.cli.group import RENAMED
from fersynth.variants.files import read_json_bounded, read_json_if_present

# Stage kinds renamed, old -> new: the stages of the renamed commands carry the command's name, and the balanced
# set's validation stage was renamed with them.
RENAMED_KINDS = {**RENAMED, "validate-evaluator": "validate-balanced-set"}

BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def _json(path: Path) -> dict | list | None:
    return read_json_if_present(path, what="metrics file")


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def experiments(metrics: Path) -> str:
    """One row per trained experiment: test accuracy over its seeds, its HOG floor, accuracy against the
    demo's hidden true labels on the FER2013 test set (where it was evaluated there)."""
    floors = (_json(metrics / "evaluate" / "floor.json") or {}).get("floor", {})
    truth = _json(metrics / "evaluate" / "true_labels.json") or {}
    lines = [
        "| experiment | train rows (synthetic) | seeds | test accuracy, mean [95% CI] | seed sd | HOG floor (own test) "
        "| below floor | FER2013 test vs true labels |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in sorted((metrics / "train").glob("*.json")):
        m = read_json_bounded(path, what="training metrics")
        accuracies = [t["test_accuracy"] for t in m["trials"]]
        sd = float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None
        floor = (m.get("floor") or {}).get("test_accuracy")
        below = "—" if floor is None else ("**yes**" if m["test_accuracy"] < floor else "no")
        true_fer = (truth.get(path.stem) or {}).get("fer2013", {}).get("accuracy")
        low, high = m["test_accuracy_ci95"]
        rows = m["rows"]
        lines.append(
            f"| {path.stem} | {rows['train']} ({rows.get('synthetic_train', 0)}) | {len(accuracies)} "
            f"| {_pct(m['test_accuracy'])} [{_pct(low)}, {_pct(high)}] | {_pct(sd)} | {_pct(floor)} | {below} "
            f"| {_pct(true_fer)} |"
        )
    below_cells = len((_json(metrics / "evaluate" / "floor.json") or {}).get("below_floor", []))
    models = len(floors)
    lines.append("")
    lines.append(
        f"Cells of `metrics/evaluate/floor.json` below their floor ({models} models x test sets): {below_cells}."
    )
    return "\n".join(lines)


def comparisons(metrics: Path) -> str:
    """One row per pair, test set and scope with a verdict (tested or not)."""
    compare = _json(metrics / "compare.json") or {}
    lines = [
        "| comparison | test set | images | difference [95% CI] | p (Holm) | verdict | seeds for +-2 / 5 / 10 pts |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for pair, tests in compare.items():
        for test, entry in tests.items():
            for scope, values in [("", entry), *((f" ({s})", entry[s]) for s in ("real", "generated") if s in entry)]:
                needed = values.get("seeds_needed") or {}
                plan = " / ".join("—" if needed.get(k) is None else str(needed[k]) for k in ("2", "5", "10"))
                interval = (
                    f"{_pct(values['difference'], True)} [{_pct(values['difference_low'], True)}, "
                    f"{_pct(values['difference_high'], True)}]"
                    if values.get("difference_low") is not None
                    else _pct(values["difference"], True)
                )
                p = values.get("p_holm")
                lines.append(
                    f"| {pair.replace('_vs_', ' vs ')} | {test}{scope} | {values['images']} | {interval} "
                    f"| {'—' if p is None else f'{p:.3f}'} | {values['verdict']} | {plan} |"
                )
    return "\n".join(lines)


def controls(metrics: Path) -> str:
    checked = _json(metrics / "compare" / "controls.json") or {}
    lines = ["| control | expected | verdict | found |", "| --- | --- | --- | --- |"]
    for name, entry in checked.items():
        lines.append(f"| {name} | {entry['expected']} | {entry['verdict']} | {'yes' if entry['found'] else '**no**'} |")
    return "\n".join(lines)


def power(metrics: Path) -> str:
    bench = _json(metrics / "bench" / "power.json")
    if not bench:
        return "(no power benchmark yet: `python benchmarks/bench_power.py`)"
    lines = [
        "| arm | true effect, mean [95% CI] | replications | called helps | called hurts | inconclusive "
        "| p < alpha before Holm | old df rule: helps / hurts | recipe | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    met = bench.get("met", {})
    for arm, result in bench["arms"].items():
        effect = result["true_effect"]
        rates = result["verdicts"]
        lines.append(
            f"| {arm} | {_pct(effect['mean'], True)} [{_pct(effect['low'], True)}, {_pct(effect['high'], True)}] "
            f"| {result['replications']} | {_rate(rates['helps'])} | {_rate(rates['hurts'])} "
            f"| {_rate(rates['inconclusive'])} | {_unadjusted(result)} | {_old_rule(result)} | {_recipe(result)} "
            f"| {_met(met.get(arm))} |"
        )
    family, images = bench.get("family", {}).get("size"), bench.get("test_images")
    seeds = sorted({result.get("seeds_per_side") for result in bench["arms"].values()} - {None})
    lines.append("")
    lines.append(
        f"{images} test images, {'/'.join(map(str, seeds)) or '?'} seeds a side, every verdict inside the shipped "
        f"family of {family} tests; "
        "targets: null false verdicts <= 5%, benefit and harm found >= 80% (interval: exact binomial, 95%)."
    )
    return "\n".join(lines)


def _recipe(result: dict) -> str:
    """The recipe an arm was measured with: its training updates (``min_steps``) and commit."""
    recipe = result.get("recipe") or {}
    return f"{recipe['min_steps']} updates, {recipe['commit']}" if recipe else "—"


def timings(metrics: Path) -> str:
    """The newcomer's first run on a fresh clone (``benchmarks/bench_pipeline.py``), against its targets."""
    bench = _json(metrics / "bench" / "pipeline.json")
    if not bench or "make_repro" not in bench:
        return "(not measured yet: `python benchmarks/bench_pipeline.py`)"
    repro, targets, met = bench["make_repro"], bench["targets"], bench["met"]
    at = _measured_at(bench, "repro_measured_at")

    def verdict(key: str) -> str:
        return "met" if met.get(key) else "**not met**"

    by_kind = current_kinds(repro["by_kind_seconds"])
    kinds = ", ".join(f"{kind} {seconds / 60:.1f}" for kind, seconds in list(by_kind.items())[:4])
    clean = (bench.get("reproduced") or {}).get("git_status_clean")
    lines = [
        f"- `make repro`: **{repro['seconds'] / 60:.1f} min** (target {targets['make_repro_seconds_max'] / 60:.0f}: "
        f"{verdict('make_repro')}), the venv included; its `dvc repro` {repro['dvc_repro_seconds'] / 60:.1f} min "
        f"(target {targets['dvc_repro_seconds_max'] / 60:.0f}: {verdict('dvc_repro')}; {repro['stages']} stages; "
        f"minutes by kind: {kinds}); `git status` afterwards: {'clean' if clean else '**dirty**'} "
        f"(fresh clone of {str(at['commit'])[:7]}, {at['date']})",
    ]
    test = bench.get("make_test")
    if test:
        at = _measured_at(bench, "tests_measured_at")
        lines.append(
            f"- `make test`: **{test['seconds'] / 60:.1f} min** (target {targets['make_test_seconds_max'] / 60:.0f}: "
            f"{verdict('make_test')}), the venv included ({test.get('pytest', '')}; "
            f"fresh clone of {str(at['commit'])[:7]}, {at['date']})"
        )
    slow = bench.get("make_test_slow")
    if slow:
        lines.append(f"- `make test-slow`: {slow['seconds_venv_in_place'] / 60:.1f} min ({slow.get('pytest', '')})")
    lines.append(f"- no-op `dvc repro`: {bench['noop_repro_seconds']:.1f} s ({verdict('noop_repro')})")
    return "\n".join(lines)


def current_kinds(by_kind: dict[str, float]) -> dict[str, float]:
    """Seconds per stage kind under the stages' current names, longest first: a benchmark measured before a
    rename keeps the old names (``reclassify``), which :data:`RENAMED_KINDS` maps to the new ones.

    >>> current_kinds({"train": 60.0, "reclassify": 150.0, "validate-evaluator": 5.0, "relabel": 30.0})
    {'relabel': 180.0, 'train': 60.0, 'validate-balanced-set': 5.0}
    """
    kinds: dict[str, float] = {}
    for kind, seconds in by_kind.items():
        name = RENAMED_KINDS.get(kind, kind)
        kinds[name] = round(kinds.get(name, 0.0) + seconds, 1)
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def _measured_at(bench: dict, key: str) -> dict:
    """Where a part of pipeline.json kept from an earlier run was measured; else the file's own commit."""
    return bench.get(key) or {"commit": bench["commit"], "date": bench["date"]}


def _unadjusted(result: dict) -> str:
    return _rate(result["unadjusted_p_below_alpha"]) if "unadjusted_p_below_alpha" in result else "—"


def _old_rule(result: dict) -> str:
    old = result.get("verdicts_old_df_rule")
    return f"{100 * old['helps']['share']:.0f}% / {100 * old['hurts']['share']:.0f}%" if old else "—"


def _met(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def _rate(rate: dict) -> str:
    """A verdict's share over the replications, with its exact 95% interval where the benchmark gives one."""
    if "ci95" in rate:
        low, high = rate["ci95"]
        return f"{100 * rate['share']:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"
    return f"{100 * rate['share']:.0f}% (SE {100 * rate['se']:.0f})"


RENDERERS: dict[str, Callable[[Path], str]] = {
    "experiments": experiments,
    "comparisons": comparisons,
    "controls": controls,
    "power": power,
    "timings": timings,
}


def render(readme: str, metrics: Path) -> str:
    """``readme`` with every results block rendered anew from ``metrics``; an unknown block name is an error."""

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise ValueError(f"results block results:{name} has no renderer; known: {sorted(RENDERERS)}")
        return f"{match.group(1)}{RENDERERS[name](Path(metrics))}\n{match.group(4)}"

    return BLOCK.sub(fill, readme)
