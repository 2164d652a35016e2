"""``fersynth filter``: entropy-based flagging of excessively noisy or unrecognisable images (paper 000,
2.1). The grey-level histogram entropy of a face photo sits in a middle band; a blank card is far
below it and pure noise near the 8-bit maximum. Flagged images in scope leave the variant; every
flagged image, in scope or not, is listed in ``flagged.csv``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fersynth.atomic import write_json
from fersynth.demo.truth import read_ground_truth
from fersynth.log import get_logger, progress, summarize
from fersynth.variants.variant import Variant, VariantWriter, decode_image

log = get_logger(__name__)
FLAGGED_COLUMNS = ["key", "source", "split", "entropy", "reason", "removed"]


@dataclass(frozen=True)
class FilterConfig:
    """``configs/filter.yaml``. Entropies are in bits (0-8 for 8-bit grey). ``scope`` ``train`` removes
    flagged train images only (val and test stay as published); ``all`` removes them everywhere."""

    entropy_min: float = 3.0
    entropy_max: float = 7.5
    scope: str = "train"

    def __post_init__(self) -> None:
        if not 0 <= self.entropy_min < self.entropy_max <= 8:
            raise ValueError(f"need 0 <= entropy_min < entropy_max <= 8, got {self.entropy_min}, {self.entropy_max}")
        if self.scope not in ("train", "all"):
            raise ValueError(f"scope must be 'train' or 'all', got {self.scope!r}")


def grey_entropy(image: Image.Image) -> float:
    """Shannon entropy (bits) of the grey-level histogram."""
    counts = np.bincount(np.asarray(image.convert("L")).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def filter_variant(
    source_dir: Path,
    out_dir: Path,
    config: FilterConfig,
    metrics_path: Path | None = None,
    ground_truth: Path | None = None,
) -> dict:
    """Write the filtered variant and ``flagged.csv``; with ``ground_truth`` (the demo's), also score
    the flags against the planted blank / noise images."""
    source = Variant(source_dir)
    entropies, flagged = [], []
    with VariantWriter(out_dir, report_name="filter.json", inputs=(source_dir,)) as writer:
        for row, data in progress(source.iter_bytes(), desc=f"filter {source.name}", total=len(source.manifest)):
            entropy = grey_entropy(decode_image(data))
            entropies.append(entropy)
            reason = None
            if entropy < config.entropy_min:
                reason = f"rule: entropy {entropy:.2f} below {config.entropy_min} (blank or unrecognisable)"
            elif entropy > config.entropy_max:
                reason = f"rule: entropy {entropy:.2f} above {config.entropy_max} (noise)"
            removed = reason is not None and (config.scope == "all" or row["split"] == "train")
            if reason:
                flagged.append(
                    {
                        "key": row["key"],
                        "source": row["source"],
                        "split": row["split"],
                        "entropy": round(entropy, 4),
                        "reason": reason,
                        "removed": removed,
                    }
                )
            if removed:
                writer.reject(row["source"], reason, "rule")
            else:
                writer.copy(row, data)
        pd.DataFrame(flagged, columns=FLAGGED_COLUMNS).to_csv(writer.layout.root / "flagged.csv", index=False)
        values = np.array(entropies)
        metrics = {
            "flagged": len(flagged),
            "removed": sum(f["removed"] for f in flagged),
            "flagged_per_split": pd.Series([f["split"] for f in flagged], dtype=object).value_counts().to_dict(),
            "entropy_quantiles": {q: round(float(np.quantile(values, q)), 3) for q in (0.0, 0.01, 0.5, 0.99, 1.0)}
            if len(values)
            else {},
        }
        if ground_truth is not None:
            metrics["against_ground_truth"] = score_flags(source.manifest, {f["key"] for f in flagged}, ground_truth)
        report = writer.commit(
            {
                "source": str(source_dir),
                "entropy_min": config.entropy_min,
                "entropy_max": config.entropy_max,
                "scope": config.scope,
            }
            | metrics
        )
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    summarize(log, f"filter {source.name}", report)
    return report


def score_flags(manifest: pd.DataFrame, flagged_keys: set[str], ground_truth: Path) -> dict:
    """Precision and recall of the flags against the demo's planted unrecognisable images."""
    truth = read_ground_truth(ground_truth)
    planted = manifest["source"].map(truth.get("unrecognisable", pd.Series(dtype=object))).notna()
    flagged = manifest["key"].isin(flagged_keys)
    hits = int((planted & flagged).sum())
    return {
        "planted": int(planted.sum()),
        "flagged": int(flagged.sum()),
        "true_positives": hits,
        "precision": round(hits / flagged.sum(), 4) if flagged.sum() else None,
        "recall": round(hits / planted.sum(), 4) if planted.sum() else None,
    }
