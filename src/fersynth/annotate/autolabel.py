"""``fersynth autolabel``: paper 003's way of using an unlabeled synthetic set (SFHQ). A trained FER
model gives every face its most likely emotion; faces below a confidence floor are set aside; each split
is then downsampled at random to a reference variant's per-class counts (paper 003: SFHQ matched to
FER2013 class by class), so "synthetic only" and "real" train on the same class sizes.

Writes a labeled variant (images copied byte for byte, splits kept from ingestion), ``autolabel.csv``
(every face: predicted emotion, confidence, kept or why not) and metrics: class counts against the
targets and, where a ground truth is given (the demo's hidden labels), the labels' agreement with it.

The labeler must not have been trained on a compared model's data or on a test set the labeled faces
will be compared on (:func:`check_labeler`): labels from ``models/fer2013`` made the sfhq test split its
own predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fersynth.atomic import write_json
from fersynth.checks.leakage import labeler_conflicts, labeler_picture_conflicts
from fersynth.config import above, check_seeds, within
from fersynth.errors import InputError, ParamsError, UsageError
from fersynth.log import get_logger, progress, summarize
from fersynth.modeling.checkpoint import read_checkpoint_config
from fersynth.modeling.data import decoded
from fersynth.modeling.trained import class_probabilities, load_trained
from fersynth.paths import trial_dirs
from fersynth.variants.files import MAX_CSV_BYTES, open_input
from fersynth.variants.labels import LABEL_SPACES
from fersynth.variants.variant import NotAVariant, Variant, VariantWriter

log = get_logger(__name__)


@dataclass(frozen=True)
class AutolabelConfig:
    """``configs/autolabel.yaml``."""

    model: str = "models/labeler"  # a `fersynth train` output (the first trial when there are several)
    min_confidence: float = 0.0  # softmax probability below which a face is set aside
    match_counts_of: str = "data/original/fer2013"  # per split and class; "" keeps every labeled face
    ratio: float = 1.0  # target = ratio x the reference's count
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("autolabel.model is empty: name a `fersynth train` model directory")
        within("autolabel", 0, 1, min_confidence=self.min_confidence)  # a softmax probability
        above("autolabel", 0, ratio=self.ratio)
        check_seeds("autolabel", seed=self.seed)


def check_labeler(model_dir: Path, labeled_variant: Path, params: Mapping) -> tuple[str, ...]:
    """The labeling model's training variants (from its saved ``config.json``); a one-line
    :class:`UsageError` if :func:`fersynth.checks.leakage.labeler_conflicts` finds any reason to refuse it."""
    try:
        variants = tuple(read_checkpoint_config(trial_dirs(Path(model_dir))[0])["variants"])
    except (OSError, ValueError, KeyError) as error:
        raise _not_a_model(model_dir, error) from None
    conflicts = labeler_conflicts(variants, labeled_variant, params)
    conflicts += labeler_picture_conflicts(variants, labeled_variant, params)
    if conflicts:
        raise UsageError(f"autolabel.model {model_dir} must not label {labeled_variant}: {'; '.join(conflicts)}")
    return variants


def targets(reference: Path | None, classes: tuple[str, ...], ratio: float) -> dict[tuple[str, int], int] | None:
    """(split, label) -> how many faces to keep; None: keep all."""
    if reference is None:
        return None
    try:
        manifest = Variant(reference).manifest
    except NotAVariant as error:
        raise ParamsError(f"autolabel.match_counts_of: {error}") from None
    labeled = manifest[manifest["label"].notna()]
    if labeled.empty:
        raise InputError(f"autolabel.match_counts_of {reference} has no labeled faces: no class counts to match")
    if LABEL_SPACES.get(labeled["label_space"].iloc[0]) != classes:
        raise ParamsError(f"autolabel.match_counts_of {reference} is not in the labeling model's label space {classes}")
    counts = labeled.groupby(["split", "label"]).size()
    return {(split, int(label)): int(round(ratio * n)) for (split, label), n in counts.items()}


def autolabel(
    source_dir: Path,
    out_dir: Path,
    config: AutolabelConfig,
    metrics_path: Path | None = None,
    ground_truth: Path | None = None,
) -> dict:
    # 1. what there is to do, checked before any face is decoded
    source = Variant(source_dir)
    manifest = source.manifest.sort_values("key").reset_index(drop=True)
    if manifest.empty:
        raise InputError(f"{source_dir} holds no faces to label")
    model, train_config, classes = _load_labeler(Path(config.model))
    wanted = targets(Path(config.match_counts_of) if config.match_counts_of else None, classes, config.ratio)
    # 2. label every face, then keep what the confidence floor and the reference's counts allow
    images = decoded(source, manifest, train_config.input)
    probabilities = class_probabilities(model, images, len(classes), desc="autolabel")
    manifest["predicted"] = probabilities.argmax(1)
    manifest["confidence"] = probabilities.max(1)
    decisions = _decide(manifest, wanted, config)
    with VariantWriter(out_dir, report_name="autolabel.json", inputs=(source_dir,)) as writer:
        by_key = decisions.set_index("key")
        for row, data in progress(source.iter_bytes(), desc=f"autolabel {source.name}", total=len(manifest)):
            decision = by_key.loc[row["key"]]
            if not decision["kept"]:
                writer.reject(row["source"], decision["reason"], "rule")
                continue
            label = int(decision["predicted"])
            row = row.copy()
            row["label"], row["emotion"], row["label_space"] = label, classes[label], _space(classes)
            writer.copy(row, data)
        table = decisions.assign(emotion=[classes[i] for i in decisions["predicted"]])
        table[["key", "source", "split", "emotion", "confidence", "kept", "reason"]].to_csv(
            writer.layout.root / "autolabel.csv", index=False
        )
        metrics = {"labeler": {"model": config.model, "trained_on": list(train_config.variants)}}
        metrics |= _metrics(table, wanted, classes, ground_truth)
        report = writer.commit({"source": str(source_dir), "model": config.model, "seed": config.seed} | metrics)
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    summarize(log, f"autolabel {source.name}", report)
    return report


def _load_labeler(model_dir: Path):
    """:func:`load_trained`, where ``autolabel.model`` names no `fersynth train` model a one-line error."""
    try:
        return load_trained(model_dir)
    except (OSError, ValueError, KeyError) as error:
        raise _not_a_model(model_dir, error) from None


def _not_a_model(model_dir: Path, error: Exception) -> ParamsError:
    return ParamsError(f"autolabel.model {model_dir} is not a `fersynth train` model: {error}")


def _decide(manifest: pd.DataFrame, wanted: dict | None, config: AutolabelConfig) -> pd.DataFrame:
    """kept / reason per face: under the confidence floor, then a seeded random pick per (split, class)."""
    rows = manifest[["key", "source", "split", "predicted", "confidence"]].copy()
    rows["kept"], rows["reason"] = True, ""
    low = rows["confidence"] < config.min_confidence
    rows.loc[low, ["kept", "reason"]] = [False, f"rule: confidence below {config.min_confidence}"]
    if wanted is not None:
        rng = np.random.default_rng(config.seed)
        for (split, label), group in rows[rows["kept"]].groupby(["split", "predicted"], sort=True):
            target = wanted.get((split, int(label)), 0)
            if len(group) > target:
                dropped = group.index[rng.permutation(len(group))[target:]]
                rows.loc[dropped, ["kept", "reason"]] = [False, f"rule: downsampled to the reference's {target}"]
    return rows


def _metrics(table: pd.DataFrame, wanted: dict | None, classes, ground_truth: Path | None) -> dict:
    kept = table[table["kept"]]
    counts = {split: {c: int((group["emotion"] == c).sum()) for c in classes} for split, group in kept.groupby("split")}
    out = {
        "labeled": len(table),
        "kept": len(kept),
        "predicted_counts": table["emotion"].value_counts().reindex(classes, fill_value=0).to_dict(),
        "kept_counts": counts,
        "mean_confidence": round(float(table["confidence"].mean()), 4) if len(table) else None,
    }
    if wanted is not None:
        out["shortfall"] = {
            f"{split}/{classes[label]}": target - counts.get(split, {}).get(classes[label], 0)
            for (split, label), target in sorted(wanted.items())
            if counts.get(split, {}).get(classes[label], 0) < target
        }
    if ground_truth is not None:
        with open_input(Path(ground_truth), MAX_CSV_BYTES, "ground truth") as handle:  # --truth: any file
            out["agreement_with_hidden_labels"] = agreement(table, pd.read_csv(handle), classes)
    return out


def agreement(table: pd.DataFrame, truth: pd.DataFrame, classes) -> dict:
    """Auto-labels against the true emotions (demo ground truth ``source, true_emotion``)."""
    from sklearn.metrics import cohen_kappa_score, recall_score

    joined = table.merge(truth[["source", "true_emotion"]].dropna(), on="source", how="inner")

    def score(rows: pd.DataFrame) -> dict:
        if rows.empty:
            return {"images": 0}
        return {
            "images": len(rows),
            "accuracy": round(float((rows["emotion"] == rows["true_emotion"]).mean()), 4),
            "cohen_kappa": round(float(cohen_kappa_score(rows["true_emotion"], rows["emotion"])), 4),
            "recall_per_class": dict(
                zip(
                    classes,
                    (
                        round(float(v), 4)
                        for v in recall_score(
                            rows["true_emotion"], rows["emotion"], labels=list(classes), average=None, zero_division=0
                        )
                    ),
                    strict=True,
                )
            ),
        }

    majority = joined["true_emotion"].value_counts(normalize=True).max() if len(joined) else None
    return {
        "all": score(joined),
        "kept": score(joined[joined["kept"]]),
        "majority_class_share": round(float(majority), 4) if majority is not None else None,
    }


def _space(classes: tuple[str, ...]) -> str:
    return next(name for name, values in LABEL_SPACES.items() if values == classes)
