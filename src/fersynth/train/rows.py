"""The rows ``fersynth train`` fits on, validates on and tests on.

- Each variant's rows are sorted by key before anything is drawn: the order of a manifest's rows never
  decides which rows validate or the order they train in.
- Validation is ``validation_fraction`` of the real train rows, seeded. Where rows carry identities
  (CASME II's ``subject`` and ``clip``) whole subjects go to one side (a seeded draw of groups, not
  stratified), or whole clips when there are too few subjects, so no face is both fitted and validated on;
  other rows split one by one, stratified by label. :attr:`TrainingRows.validation` records which.
- Synthetic rows (generated, SMOTE) only ever train, capped per class; the test rows are the first
  variant's test split, real by construction of every variant here.
- ``real_fraction`` keeps that share of the real train rows per class (a control where real data is scarce);
  validation and test are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fersynth.train.recipe import TrainConfig
from fersynth.variants.labels import LABEL_SPACES
from fersynth.variants.variant import Variant

GROUPINGS = ("subject", "clip", "row")  # validation drawn by subject, else by clip, else row by row


@dataclass(frozen=True)
class TrainingRows:
    """``splits``: train / val / test rows, each with a ``variant`` column; ``classes``: their label space;
    ``validation``: how val was drawn, ``{"grouped_by": "subject" | "clip" | "row", "groups": {"train": n,
    "val": m}}`` (groups of real rows on each side)."""

    splits: dict[str, pd.DataFrame]
    classes: tuple[str, ...]
    validation: dict


def training_rows(config: TrainConfig) -> TrainingRows:
    frames = [variant_rows(Path(path)) for path in config.variants]
    spaces = {s for f in frames for s in f["label_space"].dropna().unique()}
    if len(spaces) != 1:
        raise ValueError(f"training variants mix label spaces {sorted(spaces)}")
    classes = LABEL_SPACES[spaces.pop()]
    train = pd.concat([f[f["split"] == "train"] for f in frames], ignore_index=True)
    train = train[train["label"].notna()]
    synthetic = train["synthetic"].fillna(False).astype(bool)
    real, generated = train[~synthetic], train[synthetic]
    if real.empty:  # an all-synthetic variant (sd_artificial, ddpm_casme): validate on its own rows
        real, generated = generated, generated.iloc[0:0]
    fit, val, validation = validation_split(real, config.validation_fraction, config.data_seed)
    fit = scarce(fit, config.real_fraction, config.data_seed)
    generated = capped_synthetic(generated, fit, config.synthetic_per_class, config.synthetic_ratio)
    first = frames[0]
    test = first[(first["split"] == "test") & first["label"].notna()]
    splits = {"train": pd.concat([fit, generated], ignore_index=True), "val": val, "test": test}
    return TrainingRows(splits, classes, validation)


def variant_rows(path: Path) -> pd.DataFrame:
    """A variant's manifest in key order, with a ``variant`` column."""
    manifest = Variant(path).manifest
    return manifest.sort_values("key", kind="stable").reset_index(drop=True).assign(variant=str(path))


def identities(rows: pd.DataFrame, grouping: str) -> pd.Series:
    """Each row's group for ``grouping``: ``dataset/subject`` or ``dataset/subject/clip`` (CASME II clip
    names repeat across subjects); a row without that identity, or ``grouping == "row"``, is its own group."""
    own = "row:" + rows["variant"].astype(str) + "/" + rows["key"].astype(str)
    if grouping == "row" or grouping not in rows:
        return own
    columns = ["dataset", "subject"] if grouping == "subject" else ["dataset", "subject", "clip"]
    named = rows[columns].fillna("").astype(str).agg("/".join, axis=1)
    return named.where(rows[grouping].notna(), own)


def validation_split(real: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(fit rows, val rows, how val was drawn): by subject where there are enough subjects, else by clip
    where there are enough clips, else row by row. A class with a single real row cannot be validated on:
    its row (with the rest of its group) trains, and validation goes without it."""
    # at least one group on each side: a validation set of one whole subject is noisier than a 20% sample
    # of frames, but a frame-level one scores faces it has trained on (CASME II: best val 0.67, test 0.30)
    needed = 2
    grouping = next((g for g in GROUPINGS[:-1] if _named_groups(real, g) >= needed), "row")
    groups = identities(real, grouping)
    trains_only = _trains_only(real, groups)
    pool = real[~trains_only]
    if grouping == "row":
        fit, val = _stratified_rows(pool, fraction, seed)
    else:
        from sklearn.model_selection import GroupShuffleSplit

        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        fit_index, val_index = next(splitter.split(pool, groups=groups[pool.index]))
        fit, val = pool.iloc[fit_index], pool.iloc[val_index]
    fit = pd.concat([fit, real[trains_only]])
    counts = {"train": int(groups[fit.index].nunique()), "val": int(groups[val.index].nunique())}
    return fit, val, {"grouped_by": grouping, "groups": counts}


def _trains_only(real: pd.DataFrame, groups: pd.Series) -> pd.Series:
    """Rows of the groups holding a class's only row."""
    single = real["label"].map(real["label"].value_counts()) < 2
    return groups.isin(set(groups[single]))


def _named_groups(real: pd.DataFrame, grouping: str) -> int:
    """Distinct ``grouping`` identities among the rows that have one and may validate."""
    if grouping not in real:
        return 0
    groups = identities(real, grouping)
    return int(groups[real[grouping].notna() & ~_trains_only(real, groups)].nunique())


def _stratified_rows(pool: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    n_val = int(np.ceil(fraction * len(pool)))
    # too few rows for one of each class on both sides (a tiny generated set): a plain seeded split
    stratify = pool["label"] if min(n_val, len(pool) - n_val) >= pool["label"].nunique() else None
    return train_test_split(pool, test_size=n_val, stratify=stratify, random_state=seed)


def scarce(fit: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """``fraction`` of the real fit rows (at least one per class), drawn with ``seed`` per class: where real data
    is scarce (a control). Validation keeps every row it had, so checkpoints are chosen on the same images."""
    if fraction >= 1.0:
        return fit
    rng = np.random.default_rng([seed, 2026])
    kept = [
        group.iloc[np.sort(rng.permutation(len(group))[: max(1, int(round(fraction * len(group))))])]
        for _, group in fit.sort_values(["variant", "key"], kind="stable").groupby("label", sort=True)
    ]
    return pd.concat(kept)


def capped_synthetic(generated: pd.DataFrame, fit: pd.DataFrame, per_class: int, ratio: float) -> pd.DataFrame:
    """At most ``per_class`` synthetic rows per class (-1: no cap) and at most ``ratio`` x the real
    training rows of the same class (-1: no cap), the first ones in (variant, key) order."""
    # one order whatever the cap, so "no cap" and "a cap above the count" train on identical rows in identical order
    generated = generated.sort_values(["variant", "key"], kind="stable")
    if per_class >= 0:
        generated = generated.groupby("label").head(per_class)
    if ratio >= 0:
        caps = (generated["label"].map(fit["label"].value_counts()).fillna(0) * ratio).astype(int)
        generated = generated[generated.groupby("label").cumcount() < caps.reindex(generated.index)]
    return generated
