"""``fersynth relabel``: relabel a variant's noisy labels (the datasets paper 001 calls "reclassified").

Only labels change: the images, keys and splits are those of the source. With ``scope: train_val`` the
test split keeps its published labels; ``all`` relabels test too, as the paper did, which makes test
labels agree with a model (and flatters every later test score)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fersynth.annotate.relabel.methods import Relabelling, confident_learning, self_filter
from fersynth.atomic import write_json
from fersynth.config import check_seeds
from fersynth.demo.truth import read_ground_truth
from fersynth.log import get_logger, summarize
from fersynth.modeling.small_cnn import ModelConfig
from fersynth.variants.labels import LABEL_SPACES
from fersynth.variants.variant import Variant, VariantWriter

log = get_logger(__name__)
METHODS = ("self_filter", "confident_learning")


@dataclass(frozen=True)
class RelabelConfig:
    """``configs/relabel.yaml``. ``method`` decides the variant; with ``compare_methods`` the other
    method also runs and is scored in the metrics (not used for the variant)."""

    method: str = "self_filter"
    scope: str = "train_val"
    rounds: int = 3
    folds: int = 4
    action: str = "relabel"  # confident_learning: relabel | drop
    seed: int = 42
    consensus: int = 1  # models (seeds, or K-fold splits) that must agree before a label changes
    stability_check: bool = False  # run the chosen method again with other seeds: how far do its changes agree?
    compare_methods: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.scope not in ("train_val", "all"):
            raise ValueError(f"scope must be 'train_val' or 'all', got {self.scope!r}")
        if self.action not in ("relabel", "drop"):
            raise ValueError(f"action must be 'relabel' or 'drop', got {self.action!r}")
        if self.rounds < 1 or self.folds < 2 or self.consensus < 1:
            raise ValueError("rounds and consensus must be >= 1 and folds >= 2")
        check_seeds("relabel", seed=self.seed)


STABILITY_SEED_OFFSET = 100_000  # the second run of the stability check: seeds no first run uses


def run_method(
    method: str, images: np.ndarray, labels: np.ndarray, n_classes: int, config: RelabelConfig, offset: int = 0
) -> Relabelling:
    seed = config.seed + offset
    if method == "self_filter":
        return self_filter(images, labels, n_classes, config.rounds, config.model, seed, config.consensus)
    return confident_learning(
        images, labels, n_classes, config.folds, config.model, seed, config.action, config.consensus
    )


def agreement(first: Relabelling, second: Relabelling, labels: np.ndarray) -> dict:
    """How far two runs of one method (other seeds) agree: the labels each changed, the overlap of the two
    sets (Jaccard), and the share of changed images that got the same new label in both."""
    a, b = first.new_labels != labels, second.new_labels != labels
    both = a & b
    union = int((a | b).sum())
    return {
        "changed": [int(a.sum()), int(b.sum())],
        "changed_by_both": int(both.sum()),
        "jaccard": round(float(both.sum() / union), 4) if union else 1.0,
        "same_new_label": round(float((first.new_labels[both] == second.new_labels[both]).mean()), 4)
        if both.any()
        else None,
    }


def relabel_variant(
    source_dir: Path,
    out_dir: Path,
    config: RelabelConfig,
    metrics_path: Path | None = None,
    ground_truth: Path | None = None,
) -> dict:
    source = Variant(source_dir)
    manifest = source.manifest.sort_values("key").reset_index(drop=True)
    space = manifest["label_space"].dropna().iloc[0]
    classes = LABEL_SPACES[space]
    in_scope = manifest["split"].isin(["train", "val"] if config.scope == "train_val" else ["train", "val", "test"])
    scoped = manifest[in_scope]
    images = source.load_array(scoped, config.model.size, "L")
    labels = scoped["label"].to_numpy(dtype=int)
    # 1. the chosen method (and the other one, for comparison)
    methods = METHODS if config.compare_methods else (config.method,)
    results = {m: run_method(m, images, labels, len(classes), config) for m in methods}
    chosen = results[config.method]
    stability = None
    if config.stability_check:
        again = run_method(config.method, images, labels, len(classes), config, STABILITY_SEED_OFFSET)
        stability = agreement(chosen, again, labels)
    # 2. relabel.csv and the variant
    table = pd.DataFrame(
        {
            "key": scoped["key"].to_numpy(),
            "source": scoped["source"].to_numpy(),
            "split": scoped["split"].to_numpy(),
            "old_label": labels,
            "old_emotion": [classes[i] for i in labels],
            "new_label": chosen.new_labels,
            "new_emotion": [classes[i] if i >= 0 else None for i in chosen.new_labels],
            "confidence": np.round(chosen.confidence, 4),
            "round": chosen.round,
        }
    )
    table["changed"] = table["old_label"] != table["new_label"]
    new_label = dict(zip(table["key"], table["new_label"], strict=True))
    with VariantWriter(out_dir, report_name="relabel.json", inputs=(source_dir,)) as writer:
        for row, data in source.iter_bytes(manifest):
            label = new_label.get(row["key"], row["label"])
            if label < 0:
                writer.reject(row["source"], "rule: label issue dropped by confident learning", "rule")
                continue
            row = row.copy()
            row["label"], row["emotion"] = int(label), classes[int(label)]
            writer.copy(row, data)
        table.to_csv(writer.layout.root / "relabel.csv", index=False)
        after = Counter(r["emotion"] for r in writer.rows)
        metrics = {
            "method": config.method,
            "scope": config.scope,
            "consensus": config.consensus,
            "changed": int(table["changed"].sum()),
            "per_class": {
                name: {"before": int((manifest["emotion"] == name).sum()), "after": after.get(name, 0)}
                for name in classes
            },
        }
        if stability is not None:
            metrics["stability"] = stability
        if ground_truth is not None:
            metrics["against_ground_truth"] = {
                m: score(scoped, labels, r.new_labels, classes, ground_truth) for m, r in results.items()
            }
        report = writer.commit(metrics)
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    summarize(log, f"relabel {source.name}", report)
    log.info("relabel %s: %d of %d labels changed (%s)", source.name, metrics["changed"], len(table), config.method)
    return report


def score(rows: pd.DataFrame, old: np.ndarray, new: np.ndarray, classes: tuple[str, ...], ground_truth: Path) -> dict:
    """Against the demo's truth: precision / recall of the changed labels as detectors of the flipped
    ones, and the share of correct labels before and after. A detector that changes as many labels at
    random has precision equal to the flip rate."""
    truth = read_ground_truth(ground_truth)
    true_label = rows["source"].map(truth["true_emotion"]).map({c: i for i, c in enumerate(classes)}).to_numpy()
    known = ~pd.isna(true_label)
    true_label = np.where(known, true_label, -1).astype(int)
    flipped = (old != true_label) & known
    changed = (new != old) & known
    hits = int((flipped & changed).sum())
    kept = (new >= 0) & known
    return {
        "images": int(known.sum()),
        "flipped": int(flipped.sum()),
        "changed": int(changed.sum()),
        "precision": round(hits / changed.sum(), 4) if changed.sum() else None,
        "recall": round(hits / flipped.sum(), 4) if flipped.sum() else None,
        "random_baseline_precision": round(flipped.sum() / known.sum(), 4) if known.sum() else None,
        "correct_before": round(float((old == true_label)[known].mean()), 4) if known.any() else None,
        "correct_after": round(float((new == true_label)[kept].mean()), 4) if kept.any() else None,
    }
