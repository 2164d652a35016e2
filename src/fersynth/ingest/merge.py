"""``fersynth merge``: the merged dataset of paper 001, the union of the relabelled sources in one
label space. Provenance (``dataset``), native resolution and colour mode are kept: the heterogeneity
is the point. AffectNet is first downsampled to a balanced count per class (paper: 4,300, its disgust
count); its split memberships are kept. The same picture under two different labels is refused; the
same picture with the same label in two sources is kept once (the test copy, if any) and reported."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fersynth.config import at_least, check_seeds
from fersynth.ingest.splits import drop_duplicates
from fersynth.log import get_logger, summarize
from fersynth.variants.variant import Variant, VariantWriter

log = get_logger(__name__)


@dataclass(frozen=True)
class MergeConfig:
    """``configs/merge.yaml``. ``per_class_cap`` maps a dataset to the count per class it is
    downsampled to before merging (paper 001: affectnet 4300)."""

    seed: int = 42
    per_class_cap: dict[str, int] = field(default_factory=lambda: {"affectnet": 4300})

    def __post_init__(self) -> None:
        check_seeds("merge", seed=self.seed)
        at_least("merge.per_class_cap", 1, **self.per_class_cap)


class LabelConflict(ValueError):
    """Two sources give the same picture different labels."""


def downsample(manifest: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """At most ``cap`` rows per class, drawn at random (seeded); rows keep their split."""
    rng = np.random.default_rng(seed)
    kept = []
    for _, group in manifest.sort_values("key").groupby("label", sort=True):
        if len(group) > cap:
            group = group.iloc[np.sort(rng.choice(len(group), size=cap, replace=False))]
        kept.append(group)
    return pd.concat(kept) if kept else manifest.iloc[:0]


def find_conflicts(manifests: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows whose pixel hash appears under more than one label across the sources."""
    rows = pd.concat([m.assign(dataset=name) for name, m in manifests.items()])
    labels_per_hash = rows.groupby("sha256")["label"].nunique()
    conflicting = labels_per_hash[labels_per_hash > 1].index
    return rows[rows["sha256"].isin(conflicting)][["dataset", "key", "source", "split", "emotion", "sha256"]]


def merge_variants(sources: dict[str, Path], out_dir: Path, config: MergeConfig) -> dict:
    """Merge the variants in ``sources`` (dataset name -> variant directory) into ``out_dir``."""
    variants = {name: Variant(path) for name, path in sources.items()}
    manifests, dropped = {}, {}
    for name, variant in variants.items():
        manifest = variant.manifest
        if (manifest["label_space"] != "basic7").any():
            raise ValueError(f"{name}: only basic-7 variants can be merged")
        cap = config.per_class_cap.get(name)
        manifests[name] = downsample(manifest, int(cap), config.seed) if cap else manifest
        dropped[name] = manifest[~manifest["key"].isin(manifests[name]["key"])]
    conflicts = find_conflicts(manifests)
    if len(conflicts):
        examples = conflicts.sort_values("sha256").head(6).to_dict("records")
        raise LabelConflict(
            f"{conflicts['sha256'].nunique()} picture(s) carry different labels in different "
            f"sources, e.g. {examples}; fix the labels upstream before merging"
        )
    with VariantWriter(out_dir, report_name="merge.json", inputs=tuple(sources.values())) as writer:
        for name, variant in variants.items():
            for row, data in variant.iter_bytes(manifests[name]):
                row = row.copy()
                row["key"], row["source"] = f"{name}/{row['key']}", f"{name}/{row['source']}"
                writer.copy(row, data)
            for row in dropped[name].itertuples():
                writer.reject(
                    f"{name}/{row.source}", f"rule: downsampled to {config.per_class_cap[name]} per class", "rule"
                )
        by_hash = defaultdict(set)
        for row in writer.rows:
            by_hash[row["sha256"]].add(row["dataset"])
        cross = sum(1 for datasets in by_hash.values() if len(datasets) > 1)
        drop_duplicates(writer)
        report = writer.commit(
            {
                "sources": {name: str(path) for name, path in sources.items()},
                "per_class_cap": config.per_class_cap,
                "cross_dataset_duplicates": cross,
                "per_dataset": dict(Counter(r["dataset"] for r in writer.rows)),
                "per_class_and_dataset": pd.DataFrame(writer.rows)
                .groupby(["emotion", "dataset"])
                .size()
                .unstack(fill_value=0)
                .to_dict("index")
                if writer.rows
                else {},
            }
        )
    summarize(log, "merge", report)
    return report
