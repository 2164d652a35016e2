"""Split assignment, made once at ingest: stratified 80/10/10, by subject, and duplicate removal.

Exact duplicates are resolved before any split is drawn, so the same picture can never sit on two
sides of a split; where the source fixes the split (FER2013 ``Usage``) the copy in the most protected
split (test, then val, then train) is kept. Copies under different labels are all refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from fersynth.variants.variant import SPLIT_PRIORITY, VariantWriter

SPLITS = ("train", "val", "test")


def drop_duplicates(writer: VariantWriter) -> int:
    """Keep one row per pixel hash; demote the rest to quarantine. Copies that disagree on their labels
    (class folders, FER2013 rows, UTKFace names) are a conflict, not a duplicate: no copy can be trusted,
    so all of them are demoted (``conflicting labels``), as AffectNet's lists do with disagreeing rows.
    Returns how many were dropped."""
    by_hash: dict[str, list[dict]] = defaultdict(list)
    for row in writer.rows:
        by_hash[row["sha256"]].append(row)
    demotions = {}
    for copies in by_hash.values():
        if len(copies) < 2:
            continue
        if len({labels(row) for row in copies}) > 1:
            reason = conflict_reason(copies)
            demotions.update((row["key"], (reason, "bad_input")) for row in copies)
            continue
        ordered = sorted(copies, key=lambda r: (SPLIT_PRIORITY.get(r["split"] or "", 3), r["key"]))
        for duplicate in ordered[1:]:
            demotions[duplicate["key"]] = (f"duplicate: same pixels as {ordered[0]['source']}", "duplicate")
    writer.demote(demotions)
    return len(demotions)


def labels(row: dict) -> tuple:
    """What a source says about a picture: its emotion, or where it has none (UTKFace) the age, gender and
    ethnicity its file name gives. Other fields (split, predicted demographics in a merge) are not labels."""
    if row["label_space"] != "none":
        return (row["label_space"], row["label"])
    return ("none", row["age"], row["gender"], row["ethnicity"])


def conflict_reason(copies: list[dict], shown: int = 3) -> str:
    """``conflicting labels: the same picture is a.png (happy), b.png (sad)``, sources in order, the first
    ``shown`` named (a picture copied into every class folder is one line, not a list of thousands)."""
    ordered = sorted(copies, key=lambda r: r["source"])
    named = ", ".join(f"{row['source']} ({_label_text(row)})" for row in ordered[:shown])
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return f"conflicting labels: the same picture is {named}{more}"


def _label_text(row: dict) -> str:
    if row["label_space"] != "none":
        return str(row["emotion"])
    return "/".join(str(row[name]) for name in ("age", "gender", "ethnicity"))


def _cut(n: int, fractions: Sequence[float]) -> tuple[int, int]:
    """Boundaries (train_end, val_end) for n items; small groups fill train first."""
    train_end = int(round(n * fractions[0]))
    val_end = train_end + int(round(n * fractions[1]))
    return train_end, min(val_end, n)


def stratified_split(
    rows: list[dict],
    seed: int,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    stratum: Callable[[dict], object] = lambda r: r["label"],
) -> None:
    """Assign ``split`` in place: per stratum, a seeded permutation of rows sorted by key is cut at
    the given fractions. Deterministic for a seed, independent of the order rows were read."""
    groups: dict[object, list[dict]] = defaultdict(list)
    for row in rows:
        groups[stratum(row)].append(row)
    rng = np.random.default_rng(seed)
    for key in sorted(groups, key=str):
        members = sorted(groups[key], key=lambda r: r["key"])
        order = rng.permutation(len(members))
        train_end, val_end = _cut(len(members), fractions)
        for position, index in enumerate(order):
            members[index]["split"] = "train" if position < train_end else "val" if position < val_end else "test"


def subject_split(rows: list[dict], seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, str]:
    """Assign ``split`` by subject so no subject is on two sides. Subjects are shuffled by seed and
    test, then val, are filled until they hold their fraction of rows (each gets at least one subject
    when there are three or more). Returns subject -> split."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["subject"]] += 1
    subjects = sorted(counts)
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    total = sum(counts.values())
    assignment: dict[str, str] = {}
    for split, fraction in (("test", fractions[2]), ("val", fractions[1])):
        filled = 0
        while len(order) > 1 and filled < fraction * total:
            subject = order.pop(0)
            assignment[subject] = split
            filled += counts[subject]
    for subject in order:
        assignment[subject] = "train"
    for row in rows:
        row["split"] = assignment[row["subject"]]
    return assignment
