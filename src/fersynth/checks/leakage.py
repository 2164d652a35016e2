"""Which data may meet which model: rules over ``params.yaml`` that keep a test set from being chosen,
labeled or trained by what it evaluates (autolabel's labeler check, the balanced set's ``not_in``), and their
check picture by picture (pixel hashes, whatever variant or path holds a picture: :func:`pictures`)."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path

from fersynth.errors import ParamsError
from fersynth.paths import original_variant
from fersynth.variants.variant import Variant


def _norm(variant: str | Path) -> str:
    return posixpath.normpath(Path(variant).as_posix())


def train_variants(params: Mapping) -> dict[str, tuple[str, ...]]:
    """``train.<experiment>.variants`` of every experiment; one without is a :class:`ParamsError` (what a
    model was trained on must be written down to be checked)."""
    unset = sorted(name for name, spec in params["train"].items() if not (spec or {}).get("variants"))
    if unset:
        raise ParamsError(f"train.{unset[0]}.variants is not set; the leakage checks read every experiment's")
    return {name: tuple(_norm(v) for v in spec["variants"]) for name, spec in params["train"].items()}


def model_variants(params: Mapping, model: str) -> tuple[str, ...]:
    """The training variants of the model ``evaluate.models`` names ``model`` (its directory is
    ``models/<experiment>``)."""
    experiment = Path(params["evaluate"]["models"].get(model, model)).name
    trained = train_variants(params)
    if experiment not in trained:
        raise ParamsError(
            f"compare names model {model!r}, which no train.<experiment> trains; train has: {sorted(trained)}"
        )
    return trained[experiment]


def labeler_conflicts(labeler_variants, labeled_variant: str | Path, params: Mapping) -> list[str]:
    """Why a model trained on ``labeler_variants`` must not label ``labeled_variant``; ``[]`` if it may.

    Refused, per training variant of the labeler: (1) it is the training data of a model in a
    ``compare.pairs`` pair (that model's own predictions would become the labels it is compared on), or
    (2) it is a test set of a pair whose candidate trains on the labeled variant (the labels would carry
    the test domain into the candidate).

    >>> params = {"train": {"fer2013": {"variants": ["data/original/fer2013"]},
    ...                     "hybrid": {"variants": ["data/original/fer2013", "data/sfhq_labeled"]}},
    ...           "evaluate": {"models": {}, "test_sets": {"affectnet": "data/relabelled/affectnet"}},
    ...           "compare": {"pairs": {"hybrid": {"baseline": "fer2013", "test_sets": ["affectnet"]}}}}
    >>> labeler_conflicts(["data/relabelled/nhfi"], "data/sfhq_labeled", params)
    []
    >>> labeler_conflicts(["data/relabelled/affectnet"], "data/sfhq_labeled", params)[0].split(",")[0]
    'data/relabelled/affectnet is test set affectnet of the hybrid vs fer2013 comparison'
    """
    labeled = _norm(labeled_variant)
    test_sets = params["evaluate"]["test_sets"]
    reasons = []
    for candidate, pair in params["compare"]["pairs"].items():
        pair_name = f"the {candidate} vs {pair['baseline']} comparison"
        for model in (candidate, pair["baseline"]):
            reasons += [
                f"{v} is the training data of {model}, a compared model"
                for v in map(_norm, labeler_variants)
                if v in model_variants(params, model)
            ]
        if labeled not in model_variants(params, candidate):
            continue
        for test_set in pair["test_sets"]:
            reasons += [
                f"{v} is test set {test_set} of {pair_name}, and {candidate} trains on {labeled}"
                for v in map(_norm, labeler_variants)
                if v == _norm(test_sets[test_set])
            ]
    return list(dict.fromkeys(reasons))


def balanced_set_not_in(params: Mapping, balanced_set: str | Path) -> tuple[str, ...]:
    """The variants none of whose train or val pictures may be in the balanced set: every
    ``train.*.variants``, every ``evaluate.test_sets`` variant but the balanced set itself, and the ingested
    variant of each ``balanced_set.datasets`` source; sorted, no repeats."""
    balanced_set = _norm(balanced_set)
    variants = {v for trained in train_variants(params).values() for v in trained}
    variants |= {_norm(v) for v in params["evaluate"]["test_sets"].values()}
    variants |= {_norm(original_variant(d)) for d in params["balanced_set"]["datasets"]}
    return tuple(sorted(variants - {balanced_set}))


def pictures(variants, splits: tuple[str, ...]) -> set[str]:
    """Pixel hashes (``sha256``) of the rows of ``splits`` in ``variants`` that are here (others: none)."""
    out: set[str] = set()
    for variant in variants:
        if (Path(variant) / "manifest.parquet").is_file():
            manifest = Variant(Path(variant)).manifest
            out |= set(manifest.loc[manifest["split"].isin(splits), "sha256"])
    return out


def labeler_picture_conflicts(labeler_variants, labeled_variant: str | Path, params: Mapping) -> list[str]:
    """:func:`labeler_conflicts`'s rules checked on pictures, not paths: a labeler whose train or val pictures
    include (1) train or val pictures of a compared model, or (2) any picture of the test-set variant of a pair
    whose candidate trains on the labeled variant, is refused however its variants are named
    (``data/relabelled/fer2013`` holds every train picture of the FER2013 baseline; ``data/merged`` 213 of
    AffectNet's). A variant these rules name that is not here cannot be checked, and says so."""
    labeled = _norm(labeled_variant)
    seen = pictures(labeler_variants, ("train", "val"))
    test_sets = params["evaluate"]["test_sets"]
    reasons = []
    for candidate, pair in params["compare"]["pairs"].items():
        for model in (candidate, pair["baseline"]):
            for variant in model_variants(params, model):
                if variant == labeled:
                    continue  # the labeled variant is the output: what it will hold is the labeler's to decide
                if not (Path(variant) / "manifest.parquet").is_file():
                    reasons.append(f"{variant}, the training data of {model}, is not here to check (dvc pull)")
                    continue
                if overlap := len(seen & pictures([variant], ("train", "val"))):
                    reasons.append(f"{overlap} of its train/val pictures are training pictures of {model} ({variant})")
        if labeled in model_variants(params, candidate):
            for test_set in pair["test_sets"]:
                domain = pictures([test_sets[test_set]], ("train", "val", "test"))
                if overlap := len(seen & domain):
                    reasons.append(
                        f"{overlap} of its train/val pictures are pictures of {test_sets[test_set]}, the test set "
                        f"{test_set} that {candidate} is compared on (its domain would reach the labels)"
                    )
    return list(dict.fromkeys(reasons))
