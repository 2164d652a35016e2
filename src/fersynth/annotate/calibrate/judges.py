"""The judges of ``fersynth calibrate``: classifiers that say which emotion a face shows, each as
probabilities over basic7 (mapped by class name, whatever the judge's own label order).

- a ``fersynth train`` output trained on real faces (``models/labeler``, ``models/affectnet``, ...): refused
  when it learned from synthetic rows, when it is a compared model, or when its data would carry a compared
  model's training set or test domain into the calibrated labels (:func:`judge_conflicts`);
- ``fer``: the network published with the ``fer`` package (:mod:`fersynth.modeling.fer_network`: MIT;
  FER2013-trained, 64x64 grey, its authors report 66% on FER2013; Keras 3 on PyTorch, no TensorFlow).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fersynth.checks.leakage import pictures
from fersynth.config import section
from fersynth.errors import UsageError
from fersynth.modeling.data import decoded
from fersynth.modeling.fer_network import FER_CLASSES, FER_NAME, FerNetwork
from fersynth.modeling.trained import class_probabilities, load_trained
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant

FER_JUDGE = FER_NAME


@dataclass(frozen=True)
class JudgeInfo:
    """What the calibration report says about a judge."""

    name: str
    kind: str  # fersynth | fer
    source: str  # model directory or weights file
    trained_on: tuple[str, ...]
    sha256: str = ""  # of the weights file (the fer judge)


class TrainedJudge:
    """A ``fersynth train`` classifier (its first trial)."""

    def __init__(self, model_dir: Path, batch_size: int = 256):
        self.model, self.spec, classes = load_trained(Path(model_dir))
        self.order = _basic7_order(classes, str(model_dir))
        self.batch_size = batch_size
        self.info = JudgeInfo(str(model_dir), "fersynth", str(model_dir), tuple(self.spec.variants))

    @torch.no_grad()
    def probabilities(self, source: Variant, rows: pd.DataFrame) -> np.ndarray:
        images = decoded(source, rows, self.spec.input)
        own = class_probabilities(self.model, images, len(self.order), self.batch_size)
        return own[:, self.order]


class FerJudge:
    """The ``fer`` package's FER2013 network (:class:`~fersynth.modeling.fer_network.FerNetwork`) on a
    variant's rows, read in basic7 order."""

    def __init__(self, batch_size: int = 256):
        self.network = FerNetwork(batch_size)
        self.input = self.network.input
        self.order = _basic7_order(FER_CLASSES, FER_JUDGE)
        # its package does not publish its training split: on a real FER2013 test set its votes may carry test
        # pictures it learned from (docs/calibration.md says so)
        self.info = JudgeInfo(FER_JUDGE, "fer", self.network.source, ("FER2013",), self.network.sha256)

    def probabilities(self, source: Variant, rows: pd.DataFrame) -> np.ndarray:
        own = self.network.probabilities(decoded(source, rows, self.input))  # N x 1 x 64 x 64 uint8 in
        return own[:, self.order]


def load_judge(name: str, batch_size: int = 256) -> TrainedJudge | FerJudge:
    """``fer`` or the directory of a ``fersynth train`` output."""
    if name == FER_JUDGE:
        return FerJudge(batch_size)
    if not Path(name).is_dir():
        raise UsageError(f"unknown judge {name!r}: give `{FER_JUDGE}` or a `fersynth train` model directory")
    try:
        return TrainedJudge(Path(name), batch_size)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise UsageError(f"judge {name} is not a `fersynth train` model: {error}") from None


def judge_conflicts(judge: JudgeInfo, calibrated_variant: str | Path, params: Mapping) -> list[str]:
    """Why a ``fersynth train`` judge must not calibrate the labels ``calibrated_variant``'s models train on;
    ``[]`` if it may. Refused: a judge whose training data is not written down; a compared model itself; a
    model that learned from synthetic rows (it would grade generated faces by what generated faces look
    like); and one whose train or val pictures (by pixel hash, whatever variant holds them) include a test
    picture of a pair that trains on the calibrated labels, or of the calibrated variant's own test split.

    A judge may share the pair's real training pictures (``models/merged`` holds FER2013's train split): both
    sides of the pair train on them, so they are not what the comparison varies, and no test picture is
    involved. The ``fer`` judge is not checked here: its package does not publish its training split."""
    if judge.kind != "fersynth":
        return []
    if not judge.trained_on:
        return ["its config.json names no training variants: what it learned from cannot be checked"]
    pairs = section(params, "compare.pairs")
    models = section(params, "evaluate.models")
    compared = {name for candidate, pair in pairs.items() for name in (candidate, pair["baseline"])}
    reasons = [
        f"it is {name}, a compared model" for name in sorted(compared) if _same(models.get(name, ""), judge.source)
    ]
    reasons += [why for v in judge.trained_on if (why := _synthetic(v))]
    if any("is not here" in r for r in reasons):
        return reasons
    seen = pictures(judge.trained_on, ("train", "val"))
    for name, variant in _guarded_test_sets(calibrated_variant, params).items():
        overlap = len(seen & pictures([variant], ("test",)))
        if overlap:
            reasons.append(f"{overlap} of its train/val pictures are test pictures of {name} ({variant})")
    return reasons


def check_judges(judges: list[JudgeInfo], calibrated_variant: str | Path, params: Mapping) -> None:
    """A one-line :class:`UsageError` naming every refused judge and why."""
    refused = [f"{j.name}: {'; '.join(r)}" for j in judges if (r := judge_conflicts(j, calibrated_variant, params))]
    if refused:
        raise UsageError(f"calibrate.judges may not judge {calibrated_variant}: {' | '.join(refused)}")


def seen_pictures(judge: JudgeInfo) -> set[str]:
    """Pixel hashes of the train and val pictures a ``fersynth train`` judge learned and selected on."""
    return pictures(judge.trained_on, ("train", "val")) if judge.kind == "fersynth" else set()


def _guarded_test_sets(calibrated_variant: str | Path, params: Mapping) -> dict[str, str]:
    """Test sets no judge may have learned: those of every pair whose candidate or baseline trains on the
    calibrated variant."""
    test_sets, models = section(params, "evaluate.test_sets"), section(params, "evaluate.models")
    target = _resolved(calibrated_variant)

    def trains_on_target(model: str) -> bool:
        spec = section(params, "train").get(Path(models.get(model, model)).name) or {}
        return target in {_resolved(v) for v in spec.get("variants", [])}

    out = {}
    for candidate, pair in section(params, "compare.pairs").items():
        if trains_on_target(candidate) or trains_on_target(pair["baseline"]):
            out |= {t: test_sets[t] for t in pair["test_sets"] if t in test_sets}
    return out


def _resolved(path: str | Path) -> Path:
    return Path(path).resolve()


def _synthetic(variant: str) -> str:
    """Why ``variant`` cannot have taught a judge real faces; "" if it can."""
    if not (Path(variant) / "manifest.parquet").is_file():
        return f"its training variant {variant} is not here to check (dvc pull {variant})"
    manifest = Variant(Path(variant)).manifest
    if manifest.loc[manifest["split"] == "train", "synthetic"].any():
        return f"{variant} has synthetic train rows: a judge learns from real faces"
    return ""


def _same(a: str, b: str) -> bool:
    return bool(a) and Path(a).resolve() == Path(b).resolve()


def _basic7_order(classes: tuple[str, ...], judge: str) -> list[int]:
    """Column of each basic7 emotion in the judge's own output."""
    if sorted(classes) != sorted(BASIC7):
        raise UsageError(f"judge {judge} predicts {list(classes)}, not the seven basic emotions")
    return [classes.index(emotion) for emotion in BASIC7]
