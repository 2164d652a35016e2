"""``fersynth calibrate``: an ensemble of judges votes on every generated face (SynFER's FERAnno idea; paper 001
checked its faces by eye). A generated face carries the emotion it was asked for; where the vote names
another one, the row is relabelled to the vote or dropped (``calibrate.action``). Real rows, and generated rows
outside ``calibrate.splits``, pass through untouched.

Writes the calibrated variant (images copied byte for byte; dropped rows in its quarantine list with the vote
that dropped them), ``calibrate.csv`` (every judged face: each judge's emotion and probability, the vote, the
decision) and metrics: agreement with the prompt per emotion, generator and demographic group (with 95%
Wilson intervals), each judge's own agreement, how often the judges agree with each other, and every judge's
accuracy on the variant's real faces of ``real_split`` (how far a judge can be trusted on these pictures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fersynth.annotate.calibrate.agreement import calibration_metrics
from fersynth.annotate.calibrate.judges import FER_JUDGE, FerJudge, TrainedJudge, load_judge, seen_pictures
from fersynth.atomic import write_json
from fersynth.errors import InputError, ParamsError, UsageError
from fersynth.log import get_logger, progress, summarize
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant, VariantWriter

log = get_logger(__name__)
VOTES = ("mean", "majority")
ACTIONS = ("relabel", "drop")


@dataclass(frozen=True)
class CalibrateConfig:
    """``configs/calibrate.yaml``."""

    judges: tuple[str, ...] = ("models/labeler", "models/affectnet", "fer")  # `fer` or `fersynth train` outputs
    vote: str = "mean"  # mean: the judges' averaged probabilities | majority: more than half of their top emotions
    action: str = "relabel"  # what happens to a face whose vote is not its prompt's emotion: relabel | drop
    min_confidence: float = 0.5  # relabel only when the vote's probability (mean) or share (majority) reaches this
    splits: tuple[str, ...] = ("train",)  # generated rows of these splits are judged
    real_split: str = "val"  # the judges are scored on the variant's real faces of this split ("" skips)
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("judges", "splits"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"calibrate.{name} must be a list of names, not {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"calibrate.batch_size must be a whole number >= 1, not {self.batch_size!r}")
        if not isinstance(self.real_split, str):
            raise ValueError(f'calibrate.real_split must be a split name or "", not {self.real_split!r}')
        if not self.judges:
            raise ValueError("calibrate.judges is empty: name `fer` and/or `fersynth train` model directories")
        if self.vote not in VOTES:
            raise ValueError(f"calibrate.vote must be one of {', '.join(VOTES)}, not {self.vote!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"calibrate.action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"calibrate.min_confidence must be in [0, 1], not {self.min_confidence}")


def load_judges(config: CalibrateConfig) -> list[TrainedJudge | FerJudge]:
    """The judges, each once: two names of one directory (``models/x``, ``models/x/``) would vote twice."""
    where = [name if name == FER_JUDGE else str(Path(name).resolve()) for name in config.judges]
    twice = sorted({n for n, w in zip(config.judges, where, strict=True) if where.count(w) > 1})
    if twice:
        raise UsageError(f"calibrate.judges names one judge twice: {', '.join(twice)}")
    return [load_judge(name, config.batch_size) for name in config.judges]


def vote(probabilities: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(basic7 index voted for, or -1 where no emotion has a majority; its strength) per face from the
    judges' probabilities ``judges x faces x 7``. ``mean``: argmax of the averaged probabilities, strength its
    mean probability. ``majority``: the emotion more than half of the judges rank first, strength its share.

    >>> p = np.array([[[.6, .4, 0, 0, 0, 0, 0]], [[.1, .9, 0, 0, 0, 0, 0]], [[.7, .3, 0, 0, 0, 0, 0]]])
    >>> vote(p, "mean")[0].tolist(), vote(p, "majority")[0].tolist()
    ([1], [0])
    """
    if rule == "mean":
        mean = probabilities.mean(0)
        return mean.argmax(1), mean.max(1)
    tops = probabilities.argmax(2)  # judges x faces
    counts = np.stack([(tops == k).sum(0) for k in range(probabilities.shape[2])], 1)  # faces x 7
    best, share = counts.argmax(1), counts.max(1) / probabilities.shape[0]
    return np.where(share > 0.5, best, -1), share


def decide(prompted: np.ndarray, voted: np.ndarray, strength: np.ndarray, config: CalibrateConfig) -> pd.DataFrame:
    """decision (kept | relabelled | dropped), the emotion the row ends with, and why, per judged face."""
    rows = []
    for asked, vote_index, p in zip(prompted, voted, strength, strict=True):
        asked_name = BASIC7[asked]
        said = f"the judges voted {BASIC7[vote_index]} ({p:.2f})" if vote_index >= 0 else f"no majority ({p:.2f})"
        if vote_index == asked:
            rows.append(("kept", asked_name, ""))
        elif config.action == "relabel" and vote_index >= 0 and p >= config.min_confidence:
            rows.append(("relabelled", BASIC7[vote_index], f"{said}; the prompt asked for {asked_name}"))
        else:
            why = "" if config.action == "drop" or vote_index < 0 else f", below min_confidence {config.min_confidence}"
            rows.append(("dropped", "", f"calibrate: {said}{why}; the prompt asked for {asked_name}"))
    return pd.DataFrame(rows, columns=["decision", "final_emotion", "reason"])


def calibrate(
    source_dir: Path,
    out_dir: Path,
    config: CalibrateConfig,
    judges: list[TrainedJudge | FerJudge],
    metrics_path: Path | None = None,
) -> dict:
    source = Variant(source_dir)
    manifest = source.manifest.sort_values("key").reset_index(drop=True)
    check_source(source_dir, manifest, config)
    judged_mask = manifest["synthetic"].astype(bool) & manifest["split"].isin(config.splits)
    other = judged_mask & ((manifest["label_space"] != "basic7") | ~manifest["emotion"].isin(BASIC7))
    if other.any():
        spaces = ", ".join(sorted(map(str, manifest.loc[other, "label_space"].unique())))
        raise UsageError(
            f"{source_dir}: {int(other.sum())} generated rows are not labelled in basic7 ({spaces}); the judges "
            "name the seven basic emotions"
        )
    judged = manifest[judged_mask].reset_index(drop=True)
    log.info(
        "calibrate %s: %d generated faces in %s judged by %s",
        source.name,
        len(judged),
        "/".join(config.splits),
        ", ".join(j.info.name for j in judges),
    )
    probabilities = np.stack([judge.probabilities(source, judged) for judge in progress(judges, desc="judges")])
    voted, strength = vote(probabilities, config.vote)
    prompted = judged["emotion"].map(BASIC7.index).to_numpy()
    table = _table(judged, judges, probabilities, voted, strength)
    table = pd.concat([table, decide(prompted, voted, strength, config)], axis=1)
    real = _real_scores(source, manifest, judges, config)
    metrics = calibration_metrics(table, [j.info for j in judges], config, real)
    weak = metrics["judges_not_better_than_majority"]
    if weak:
        log.warning(
            "calibrate %s: judge(s) %s no better on real %s faces than always naming their most frequent emotion: "
            "their votes say little about these faces",
            source.name,
            ", ".join(weak),
            config.real_split,
        )
    with VariantWriter(out_dir, report_name="calibrate.json", inputs=(source_dir,)) as writer:
        by_key = table.set_index("key")
        for row, data in progress(source.iter_bytes(manifest), desc=f"calibrate {source.name}", total=len(manifest)):
            if row["key"] in by_key.index:
                decision = by_key.loc[row["key"]]
                if decision["decision"] == "dropped":
                    writer.reject(row["source"], decision["reason"], "rule")
                    continue
                if decision["decision"] == "relabelled":
                    row = row.copy()
                    row["emotion"], row["label"] = decision["final_emotion"], BASIC7.index(decision["final_emotion"])
            writer.copy(row, data)
        table.to_csv(writer.layout.root / "calibrate.csv", index=False)
        report = writer.commit({"source": str(source_dir), "calibration": metrics})
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    summarize(log, f"calibrate {source.name}", report)
    return report


def check_source(source_dir: Path, manifest: pd.DataFrame, config: CalibrateConfig) -> None:
    """Before any judging: the split names of ``calibrate`` are splits of the variant (a typo would judge
    nothing and pass every row through), and there are generated faces in them to judge."""
    if manifest.empty:
        raise InputError(f"{source_dir} is empty: no generated faces to judge")
    present = sorted(set(manifest["split"].dropna()))
    unknown = [f"calibrate.splits {split!r}" for split in config.splits if split not in present]
    if config.real_split and config.real_split not in present:
        unknown.append(f"calibrate.real_split {config.real_split!r}")
    if unknown:
        raise ParamsError(f"{', '.join(unknown)}: not a split of {source_dir} (it has: {', '.join(present)})")
    generated = manifest["synthetic"].astype(bool)
    if not (generated & manifest["split"].isin(config.splits)).any():
        where = sorted(set(manifest.loc[generated, "split"])) or ["none"]
        raise InputError(
            f"{source_dir} has no generated faces in calibrate.splits {', '.join(config.splits)} to judge "
            f"(generated faces are in: {', '.join(where)})"
        )


def _table(judged: pd.DataFrame, judges, probabilities: np.ndarray, voted, strength) -> pd.DataFrame:
    columns = ["key", "source", "split", "generator", "gender", "age_group", "ethnicity", "emotion"]
    table = judged[columns].rename(columns={"emotion": "prompt_emotion"}).copy()
    for judge, p in zip(judges, probabilities, strict=True):
        table[f"judge:{judge.info.name}"] = [BASIC7[i] for i in p.argmax(1)]
        table[f"judge:{judge.info.name}:p"] = p.max(1).round(4)
    table["vote"] = [BASIC7[i] if i >= 0 else "" for i in voted]
    table["vote_strength"] = np.round(strength, 4)
    return table


def _real_scores(source: Variant, manifest: pd.DataFrame, judges, config: CalibrateConfig) -> dict:
    """Accuracy of every judge and of the vote on the variant's real, labelled faces of ``real_split``: on
    all of them, and on those the judge never learned or selected its checkpoint on (by pixel hash; a judge
    that chose its best epoch on these faces scores optimistically on them)."""
    if not config.real_split:
        return {}
    real = manifest[
        ~manifest["synthetic"].astype(bool)
        & (manifest["split"] == config.real_split)
        & (manifest["label_space"] == "basic7")
        & manifest["emotion"].isin(BASIC7)
    ].reset_index(drop=True)
    if real.empty:
        return {"split": config.real_split, "images": 0}
    truth = real["emotion"].map(BASIC7.index).to_numpy()
    probabilities = np.stack([judge.probabilities(source, real) for judge in judges])
    voted, _ = vote(probabilities, config.vote)
    accuracy, unseen = {}, {}
    for judge, p in zip(judges, probabilities, strict=True):
        right = p.argmax(1) == truth
        accuracy[judge.info.name] = round(float(right.mean()), 4)
        fresh = ~real["sha256"].isin(seen_pictures(judge.info)).to_numpy()
        unseen[judge.info.name] = {
            "images": int(fresh.sum()),
            "accuracy": round(float(right[fresh].mean()), 4) if fresh.any() else None,
        }
    counts = np.bincount(truth, minlength=len(BASIC7))
    return {
        "split": config.real_split,
        "images": len(real),
        "accuracy": accuracy | {"vote": round(float((voted == truth).mean()), 4)},
        "unseen_by_judge": unseen,
        "majority_class_share": round(float(counts.max() / counts.sum()), 4),
    }
