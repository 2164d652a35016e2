"""``fersynth report``: one self-contained HTML page (images inlined) with what a researcher reads after
``dvc repro``. Its first screen answers: one line per research question (a compared pair: did the model
beat its baseline, per test set: verdict, difference, 95% interval), the known-answer controls' verdicts
and the models whose numbers mean nothing (one-class answers); below, the with-vs-without details, the
cross-dataset accuracy and macro-F1 tables, training summaries with learning curves, per-class reports,
confusion matrices, fairness on the balanced set, robustness, and the generated-face sample grids. A missing
input leaves its section saying so. The page is a function of the metrics alone (same bytes for same
inputs).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fersynth.atomic import atomic_path
from fersynth.log import get_logger
from fersynth.paths import DataDocsLayout, EvaluateLayout
from fersynth.variants.files import (
    MAX_CSV_BYTES,
    MAX_FILE_BYTES,
    open_input,
    read_input,
    read_json_bounded,
    read_json_if_present,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class ReportInputs:
    metrics: Path = Path("metrics")  # train/, evaluate/, compare.json, calibrate/
    contact_sheets: Path = Path("reports/contact_sheets")

    def json(self, relative: str) -> dict | None:
        return _json(Path(self.metrics) / relative)


def build_report(inputs: ReportInputs, out: Path) -> dict:
    """Write the page to ``out``; returns what it holds (section -> number of items)."""
    from jinja2 import Environment, PackageLoader, Undefined, select_autoescape

    env = Environment(loader=PackageLoader("fersynth.report", "templates"), autoescape=select_autoescape(["html"]))
    missing = (type(None), Undefined)  # no value, or a key an older compare.json lacks: a dash, not a crash
    env.filters["pct"] = lambda v: "—" if isinstance(v, missing) else f"{100 * v:.1f}"
    env.filters["signed"] = lambda v: "—" if isinstance(v, missing) else f"{100 * v:+.1f}"
    env.filters["p"] = lambda v: "—" if isinstance(v, missing) else (f"{v:.3f}" if v >= 0.001 else "<0.001")
    evaluated = EvaluateLayout.under(inputs.metrics)
    context = {
        "cross_dataset": _json(evaluated.cross_dataset) or {},
        "macro_f1": _json(evaluated.macro_f1) or {},
        "floor": _json(evaluated.floor) or {},
        "true_labels": _json(evaluated.true_labels) or {},
        "one_class": _one_class(_json(evaluated.one_class) or {}),
        "controls": inputs.json("compare/controls.json") or {},
        "heatmap": _png(evaluated.cross_dataset_png),
        "comparisons": _comparisons(inputs.json("compare.json") or {}),
        "calibration": {p.stem: _json(p) for p in sorted((Path(inputs.metrics) / "calibrate").glob("*.json"))},
        "training": _training(Path(inputs.metrics) / "train"),
        "per_class": _per_class(evaluated.per_class_dir),
        "confusion": _images(evaluated.confusion_figures_dir),
        "fairness": _json(evaluated.fairness) or {},
        "robustness": _json(evaluated.robustness) or {},
        "samples": _images(Path(inputs.contact_sheets)),
        "demographics": {p.stem: _png(p) for p in sorted((Path(out).parent / "demographics").glob("*.png"))},
    }
    context["test_sets"] = sorted({t for row in context["cross_dataset"].values() for t in row})
    context["answers"] = answers(inputs.json("compare.json") or {}, context["controls"], context["one_class"])
    context["train_rows"] = {t["name"]: t["metrics"].get("rows") or {} for t in context["training"]}
    context["provenance"] = provenance(Path(out))
    html = env.get_template("report.html").render(**context)
    with atomic_path(Path(out)) as tmp:
        tmp.write_text(html, encoding="utf-8")
    summary = {k: len(v) for k, v in context.items() if isinstance(v, dict | list)}
    log.info("report: %s -> %s", summary, out)
    return summary


SCOPES = ("all", "real", "generated")  # a test set mixing real and generated faces is answered by its parts


def answers(compare: dict, controls: dict, one_class: dict) -> dict:
    """The first screen: ``questions`` (one row per compared pair that is not a known-answer control, one
    cell per test set and scope), their ``columns``, the ``controls`` (each with its cell) and ``tested``
    (the size of the Holm family)."""
    rows, control_rows, columns = [], [], set()
    for pair, tests in compare.items():
        candidate, baseline = pair.split("_vs_", 1)
        cells = {}
        for test, entry in tests.items():
            warn = [m for m in (candidate, baseline) if test in one_class.get(m, {})]
            control = controls.get(f"{candidate}_on_{test}")
            if control is not None:
                control_rows.append(_control(control, candidate, baseline, test, _cell(entry, pair, test, "all", warn)))
                continue
            for scope in ("real", "generated") if "real" in entry or "generated" in entry else ("all",):
                cells[test, scope] = _cell(entry if scope == "all" else entry[scope], pair, test, scope, warn)
        if cells:
            rows.append({"pair": pair, "candidate": candidate, "baseline": baseline, "cells": cells})
            columns |= set(cells)
    used = {column: sum(column in row["cells"] for row in rows) for column in columns}  # most-asked test sets first
    order = sorted(columns, key=lambda c: (-used[c], c[0], SCOPES.index(c[1])))
    tested = sum(
        1
        for tests in compare.values()
        for entry in tests.values()
        for part in (entry, entry.get("real") or {}, entry.get("generated") or {})
        if part.get("p_holm") is not None
    )
    return {"questions": rows, "columns": order, "controls": control_rows, "tested": tested}


def _cell(entry: dict, pair: str, test: str, scope: str, one_class_models: list[str]) -> dict:
    """One answer: the verdict cut into its word and its note, the difference, and the interval that agrees
    with the verdict: the family-adjusted one where the comparison was tested (Holm rejects whenever it
    excludes 0), else the unadjusted one, marked so."""
    kind, headline, note = verdict_parts(str(entry.get("verdict", "")))
    adjusted = entry.get("difference_low_adjusted") is not None
    low, high = (
        ("difference_low_adjusted", "difference_high_adjusted") if adjusted else ("difference_low", "difference_high")
    )
    return {
        "kind": kind,
        "headline": headline,
        "note": note,
        "verdict": entry.get("verdict"),
        "difference": entry.get("difference"),
        "low": entry.get(low),
        "high": entry.get(high),
        "adjusted": adjusted,
        "anchor": f"cmp-{pair}-{test}-{scope}",
        "one_class": one_class_models,
    }


def verdict_parts(verdict: str) -> tuple[str, str, str]:
    """``(kind, headline, note)`` of a compare verdict, e.g. ``("inconclusive", "inconclusive", "detects
    ±3.4 pts")``; kind is helps / hurts / inconclusive / identical / untested (the cell's colour)."""
    if verdict in ("helps", "hurts"):
        return verdict, verdict, ""
    if ": " in verdict:  # "identical predictions: no difference to test", "same images right and wrong ...: ..."
        head, _, tail = verdict.partition(": ")
        return "identical", head, tail
    head, _, tail = verdict.partition(" (")
    kind = "inconclusive" if head == "inconclusive" else "untested"
    return kind, head, tail.removesuffix(")").replace("+-", "±")


def _control(control: dict, candidate: str, baseline: str, test: str, cell: dict) -> dict:
    planted = {"helps": "planted benefit", "hurts": "planted harm", "inconclusive": "null (nothing planted)"}
    label = planted.get(control.get("expected"), str(control.get("expected")))
    return {"label": label, "candidate": candidate, "baseline": baseline, "test": test, **control, "cell": cell}


def _one_class(report: dict) -> dict[str, dict[str, list[str]]]:
    """evaluate's ``one_class.json`` as {model: {test set: reasons}} (the flagged cells only)."""
    out: dict[str, dict[str, list[str]]] = {}
    for cell in report.get("flagged", []):
        if isinstance(cell, dict) and {"model", "test_set"} <= cell.keys():  # else an older or foreign file
            out.setdefault(str(cell["model"]), {})[str(cell["test_set"])] = [str(r) for r in cell.get("reasons", [])]
    return out


def provenance(out: Path) -> dict:
    """Where the numbers come from: links to the Data Docs site beside the page (``reports/data_docs``),
    its index of every suite first, then each suite's first validation page (its manifest checks). No
    commit, time or experiment name: the page is a DVC output, and a fresh clone that reproduces the
    pipeline must write the same bytes (the commit of the build is not known before the build is committed;
    ``dvc status`` says whether the page matches ``dvc.lock``)."""
    site = DataDocsLayout(out.parent / "data_docs")
    links = {"all suites": "data_docs/index.html"} if site.index.is_file() else {}
    suites = sorted(p.name for p in site.validations_dir.iterdir()) if site.validations_dir.is_dir() else []
    for suite in suites:
        entries = _json(site.entries(suite)) or []
        if entries:
            links[suite] = f"data_docs/{entries[0]['filepath']}"  # already URL-quoted, relative to the site
    return {"data_docs": links}


def _json(path: Path) -> dict | list | None:
    return read_json_if_present(path, what="metrics file")


def _png(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(read_input(path, MAX_FILE_BYTES, "figure")).decode()


def _images(directory: Path) -> dict[str, dict[str, str]]:
    """``<directory>/<group>/<name>.png`` -> {group: {name: data URI}}, sorted."""
    if not directory.is_dir():
        return {}
    out: dict[str, dict[str, str]] = {}
    for path in sorted(directory.glob("*/*.png")):
        out.setdefault(path.parent.name, {})[path.stem] = _png(path)
    return out


def _comparisons(compare: dict) -> list[dict]:
    """One row per pair, test set and scope (all rows; then the real and the generated ones apart)."""
    rows = []
    for pair, tests in compare.items():
        candidate, baseline = pair.split("_vs_", 1)
        for test, result in tests.items():
            rows.append({"candidate": candidate, "baseline": baseline, "test": test, "scope": "all", **result})
            for scope in ("real", "generated"):
                if scope in result:
                    rows.append(
                        {"candidate": candidate, "baseline": baseline, "test": test, "scope": scope, **result[scope]}
                    )
    return rows


def _training(directory: Path) -> list[dict]:
    rows = []
    for path in sorted(directory.glob("*.json")):
        metrics = read_json_bounded(path, what="training metrics")
        history = directory / "history" / f"{path.stem}.csv"
        rows.append(
            {
                "name": path.stem,
                "metrics": metrics,
                "curve": _learning_curve(_history(history), path.stem) if history.exists() else None,
            }
        )
    return rows


def _history(path: Path) -> pd.DataFrame:
    with open_input(path, MAX_CSV_BYTES, "training history") as handle:
        return pd.read_csv(handle)


def _learning_curve(history: pd.DataFrame, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss, accuracy) = plt.subplots(1, 2, figsize=(7, 2.6))
    loss.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    loss.plot(history["epoch"], history["val_loss"], marker="o", label="val")
    loss.set_xlabel("epoch")
    loss.set_title("loss")
    loss.legend()
    accuracy.plot(history["epoch"], history["val_accuracy"], marker="o", color="C2")
    accuracy.set_xlabel("epoch")
    accuracy.set_title("val accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _per_class(directory: Path) -> dict[str, dict[str, dict]]:
    if not directory.is_dir():
        return {}
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(directory.glob("*/*.json")):
        report = read_json_bounded(path, what="per-class report")
        rows = {name: values for name, values in report.items() if isinstance(values, dict)}
        averages = [name for name in ("macro avg", "weighted avg") if name in rows]
        ordered = {name: rows[name] for name in rows if name not in averages} | {n: rows[n] for n in averages}
        out.setdefault(path.parent.name, {})[path.stem] = ordered | {"accuracy": report.get("accuracy")}
    return out
