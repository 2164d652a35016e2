"""``fersynth report``: one self-contained HTML page (images inlined) with what a researcher reads after
``dvc repro``: the cross-dataset accuracy and macro-F1 tables, the with-vs-without comparisons, training
summaries with learning curves, per-class reports, confusion matrices, fairness on the evaluator,
robustness, and the generated-face sample grids. A missing input leaves its section saying so.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fersynth.atomic import atomic_path
from fersynth.log import get_logger
from fersynth.paths import DataDocsLayout, EvaluateLayout

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

    env = Environment(loader=PackageLoader("fersynth", "templates"), autoescape=select_autoescape(["html"]))
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
        "controls": inputs.json("compare/controls.json") or {},
        "heatmap": _png(evaluated.cross_dataset_png),
        "comparisons": _comparisons(inputs.json("compare.json") or {}),
        "calibration": {p.stem: _json(p) for p in sorted((Path(inputs.metrics) / "calibrate").glob("*.json"))},
        "training": _training(Path(inputs.metrics) / "train"),
        "per_class": _per_class(evaluated.per_class_dir),
        "confusion": _images(evaluated.confusion_dir),
        "fairness": _json(evaluated.fairness) or {},
        "robustness": _json(evaluated.robustness) or {},
        "samples": _images(Path(inputs.contact_sheets)),
        "demographics": {p.stem: _png(p) for p in sorted((Path(out).parent / "demographics").glob("*.png"))},
    }
    context["test_sets"] = sorted({t for row in context["cross_dataset"].values() for t in row})
    context["provenance"] = provenance(Path(out))
    html = env.get_template("report.html").render(**context)
    with atomic_path(Path(out)) as tmp:
        tmp.write_text(html, encoding="utf-8")
    summary = {k: len(v) for k, v in context.items() if isinstance(v, dict | list)}
    log.info("report: %s -> %s", summary, out)
    return summary


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
    return json.loads(path.read_text()) if path.exists() else None


def _png(path: Path) -> str | None:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.exists() else None


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
        metrics = json.loads(path.read_text())
        history = directory / "history" / f"{path.stem}.csv"
        rows.append(
            {
                "name": path.stem,
                "metrics": metrics,
                "curve": _learning_curve(pd.read_csv(history), path.stem) if history.exists() else None,
            }
        )
    return rows


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
        report = json.loads(path.read_text())
        rows = {name: values for name, values in report.items() if isinstance(values, dict)}
        averages = [name for name in ("macro avg", "weighted avg") if name in rows]
        ordered = {name: rows[name] for name in rows if name not in averages} | {n: rows[n] for n in averages}
        out.setdefault(path.parent.name, {})[path.stem] = ordered | {"accuracy": report.get("accuracy")}
    return out
