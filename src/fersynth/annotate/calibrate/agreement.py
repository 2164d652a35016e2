"""What ``fersynth calibrate`` reports: how often the judges' vote agrees with the emotion a face was
generated for, overall and per emotion, generator and demographic group (95% Wilson intervals: the groups
are small), each judge on its own, how often the judges agree with each other (mean pairwise Cohen's kappa),
and which emotions the vote moved faces to."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

from fersynth.variants.labels import BASIC7

GROUPS = ("prompt_emotion", "generator", "gender", "age_group", "ethnicity")


def agreement(agree: pd.Series) -> dict:
    """Share of ``True`` with its 95% Wilson interval.

    >>> agreement(pd.Series([True] * 8 + [False] * 2))
    {'images': 10, 'agreement': 0.8, 'ci95': [0.4902, 0.9433]}
    """
    n, k = len(agree), int(agree.sum())
    if n == 0:
        return {"images": 0, "agreement": None, "ci95": None}
    interval = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return {
        "images": n,
        "agreement": round(k / n, 4),
        "ci95": [round(float(interval.low), 4), round(float(interval.high), 4)],
    }


def by_group(table: pd.DataFrame, agree: pd.Series, column: str) -> dict:
    values = table[column].fillna("unknown").astype(str)
    return {value: agreement(agree[values == value]) for value in sorted(values.unique())}


def judges_kappa(table: pd.DataFrame, names: list[str]) -> dict:
    """Cohen's kappa of every pair of judges' top emotions, and their mean."""
    with warnings.catch_warnings():  # a judge that names one emotion only: kappa undefined, reported as null
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        pairs = {
            f"{a} ~ {b}": round(
                float(
                    cohen_kappa_score(
                        table[f"judge:{a}"], table[f"judge:{b}"], labels=list(BASIC7), replace_undefined_by=np.nan
                    )
                ),
                4,
            )
            for a, b in combinations(names, 2)
            if len(table)
        }
    pairs = {k: (v if v == v else None) for k, v in pairs.items()}  # NaN (one class only) -> null
    scored = [v for v in pairs.values() if v is not None]
    return {"pairwise": pairs, "mean": round(sum(scored) / len(scored), 4) if scored else None}


def calibration_metrics(table: pd.DataFrame, judges, config, real: dict) -> dict:
    """The metrics file of one calibrated variant (``table``: one row per judged face)."""
    names = [j.name for j in judges]
    agree = table["vote"] == table["prompt_emotion"]
    decisions = Counter(table["decision"])
    moved = table[table["decision"] == "relabelled"]
    return {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "judges": {
            j.name: {"kind": j.kind, "source": j.source, "trained_on": list(j.trained_on)}
            | ({"sha256": j.sha256} if j.sha256 else {})
            for j in judges
        },
        "judged": len(table),
        "kept": decisions.get("kept", 0),
        "relabelled": decisions.get("relabelled", 0),
        "dropped": decisions.get("dropped", 0),
        "agreement": agreement(agree),
        "agreement_by_judge": {n: agreement(table[f"judge:{n}"] == table["prompt_emotion"]) for n in names},
        "agreement_by": {column: by_group(table, agree, column) for column in GROUPS},
        "judges_kappa": judges_kappa(table, names),
        "relabelled_to": dict(sorted(Counter(moved["prompt_emotion"] + " -> " + moved["final_emotion"]).items())),
        # dropping and relabelling change how many generated faces each class has, not only their labels
        "generated_per_class": {
            "before": _per_class(table["prompt_emotion"]),
            "after": _per_class(table.loc[table["decision"] != "dropped", "final_emotion"]),
        },
        "judges_on_real_faces": real,
        "judges_not_better_than_majority": _weak(real, names),
    }


def _per_class(emotions: pd.Series) -> dict[str, int]:
    return {emotion: int((emotions == emotion).sum()) for emotion in BASIC7}


def _weak(real: dict, names: list[str]) -> list[str]:
    """Judges whose accuracy on real faces they never saw (on all of them where none are unseen) is at most
    the majority-class share."""
    if not real.get("images"):
        return []
    out = []
    for name in names:
        fresh = (real.get("unseen_by_judge") or {}).get(name) or {}
        score = fresh.get("accuracy") if fresh.get("images") else real["accuracy"][name]
        if score is not None and score <= real["majority_class_share"]:
            out.append(name)
    return out
