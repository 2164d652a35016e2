"""The selection-leakage rules on the project's own params.yaml and dvc.yaml, and on small made-up params."""

from pathlib import Path

import pytest

from fersynth.checks.leakage import balanced_set_not_in, labeler_conflicts
from fersynth.config import load_params
from fersynth.errors import ParamsError
from tests.conftest import dvc_stages

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
LABELED = "data/sfhq_labeled"  # autolabel's output in dvc.yaml


@pytest.fixture(scope="module")
def stages():
    return dvc_stages(ROOT)


def _params(**train) -> dict:
    return {
        "train": {name: {"variants": variants} for name, variants in train.items()},
        "evaluate": {
            "models": {"hybrid": "models/hybrid"},
            "test_sets": {"affectnet": "data/relabelled/affectnet", "balanced_set": "data/balanced_set"},
        },
        "compare": {"pairs": {"hybrid": {"baseline": "fer2013", "test_sets": ["affectnet", "balanced_set"]}}},
    }


def test_the_projects_labeler_is_allowed_and_is_neither_evaluated_nor_compared():
    assert PARAMS["autolabel"]["model"] == "models/labeler"
    assert labeler_conflicts(PARAMS["train"]["labeler"]["variants"], LABELED, PARAMS) == []
    assert "labeler" not in PARAMS["evaluate"]["models"]
    compared = {
        name for candidate, pair in PARAMS["compare"]["pairs"].items() for name in (candidate, pair["baseline"])
    }
    assert "labeler" not in compared


def test_a_compared_models_data_or_the_candidates_test_set_is_refused():
    # the old default: models/fer2013, seed 0 of the baseline; its own predictions became the sfhq labels
    reasons = labeler_conflicts(PARAMS["train"]["fer2013"]["variants"], LABELED, PARAMS)
    assert reasons == [
        "data/original/fer2013 is the training data of fer2013, a compared model",
        "data/original/fer2013 is the training data of hybrid, a compared model",
        "data/original/fer2013 is the training data of control_scarce, a compared model",
        "data/original/fer2013 is the training data of control_harm, a compared model",
        "data/original/fer2013 is the training data of control_null, a compared model",
    ]
    # hybrid trains on the labeled faces and is compared on AffectNet: an AffectNet labeler carries the test domain in
    [reason] = labeler_conflicts(["data/relabelled/affectnet"], LABELED, PARAMS)
    assert reason == (
        "data/relabelled/affectnet is test set affectnet of the hybrid vs fer2013 comparison, "
        "and hybrid trains on data/sfhq_labeled"
    )


def test_the_test_set_rule_applies_only_to_candidates_trained_on_the_labeled_variant():
    params = _params(fer2013=["data/original/fer2013"], hybrid=["data/original/fer2013", "data/other"])
    assert labeler_conflicts(["data/relabelled/affectnet"], "data/sfhq_labeled", params) == []
    assert len(labeler_conflicts(["./data/relabelled/affectnet"], "data/other/", params)) == 1  # paths normalised


def test_a_compared_model_without_a_train_experiment_is_a_params_error():
    params = _params(hybrid=["data/sfhq_labeled"])  # baseline fer2013 is trained by no train.<experiment>
    with pytest.raises(ParamsError, match="fer2013"):
        labeler_conflicts(["data/relabelled/nhfi"], "data/sfhq_labeled", params)


def test_balanced_set_not_in_is_every_train_and_test_variant_and_the_ingested_sources():
    derived = balanced_set_not_in(PARAMS, "data/balanced_set")
    assert set(derived) == {
        "data/original/fer2013",
        "data/original/nhfi",
        "data/original/affectnet",
        "data/original/casme2",
        "data/relabelled/nhfi",
        "data/relabelled/affectnet",
        "data/merged",
        "data/smote_balanced",
        "data/smote_only",
        "data/fer2013_rendered",
        "data/fer2013_sdxl",
        "data/calibrated/fer2013_sdxl",
        "data/sd_artificial",
        "data/ddpm_casme",
        "data/sfhq_labeled",
    }
    more = PARAMS | {"train": PARAMS["train"] | {"new": {"variants": ["data/filtered/nhfi"]}}}
    assert set(balanced_set_not_in(more, "data/balanced_set")) == set(derived) | {"data/filtered/nhfi"}


def test_validate_balanced_set_depends_on_exactly_the_derived_variants(stages):
    stage = stages["validate-balanced-set"]
    assert stage["cmd"].split()[2] == "data/balanced_set"
    variants = {d for d in stage["deps"] if d.startswith("data/")}
    assert variants - {"data/balanced_set"} == set(balanced_set_not_in(PARAMS, "data/balanced_set"))
    # the suite and the balanced set's datasets are configs files; the training variants and test sets are params
    assert {"configs/balanced_set_suite.yaml", "configs/balanced_set.yaml"} <= set(stage["deps"])
    experiments = [f"train.{name}.variants" for name in PARAMS["train"]]
    assert set(stage["params"]) >= {"evaluate.test_sets", *experiments}


def test_autolabel_depends_on_its_labeler_and_the_params_its_check_reads(stages):
    stage = stages["autolabel"]
    assert PARAMS["autolabel"]["model"] in stage["deps"] and "models/fer2013" not in stage["deps"]
    assert stage["cmd"].split()[stage["cmd"].split().index("--out") + 1] == LABELED
    variants = [f"train.{name}.variants" for name in PARAMS["train"]]
    assert "configs/autolabel.yaml" in stage["deps"]
    assert set(stage["params"]) >= {"compare.pairs", "evaluate.models", "evaluate.test_sets", *variants}
    assert stages["train@labeler"]["outs"][0] == PARAMS["autolabel"]["model"]


def _manifest(root: Path, variant: str, rows: list[tuple[str, str]]) -> None:
    """A variant holding only a manifest: (split, pixel hash) rows."""
    import pandas as pd

    folder = root / variant
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["split", "sha256"]).to_parquet(folder / "manifest.parquet")


def test_pictures_catch_what_paths_miss_however_the_variants_are_named(tmp_path, monkeypatch):
    """A relabelled copy of the baseline's data, or a merge holding the test domain, passes the path rules;
    their pixel hashes do not."""
    from fersynth.checks.leakage import labeler_picture_conflicts

    monkeypatch.chdir(tmp_path)
    params = _params(fer2013=["data/original/fer2013"], hybrid=["data/original/fer2013", "data/sfhq_labeled"])
    _manifest(tmp_path, "data/original/fer2013", [("train", "f1"), ("val", "f2"), ("test", "f3")])
    _manifest(tmp_path, "data/relabelled/affectnet", [("train", "a1"), ("test", "a2")])
    _manifest(tmp_path, "data/balanced_set", [("test", "e1")])
    _manifest(tmp_path, "data/relabelled_copy", [("train", "f1"), ("val", "f2"), ("train", "n1")])
    _manifest(tmp_path, "data/merged", [("train", "a1"), ("val", "n2")])
    _manifest(tmp_path, "data/clean", [("train", "n3"), ("train", "f3")])  # FER2013's *test* picture: not training
    assert labeler_conflicts(["data/relabelled_copy"], LABELED, params) == []  # the path rules see nothing
    copy = labeler_picture_conflicts(["data/relabelled_copy"], LABELED, params)
    assert sorted(copy) == [
        "2 of its train/val pictures are training pictures of fer2013 (data/original/fer2013)",
        "2 of its train/val pictures are training pictures of hybrid (data/original/fer2013)",
    ]
    [merged] = labeler_picture_conflicts(["data/merged"], LABELED, params)
    assert merged.startswith("1 of its train/val pictures are pictures of data/relabelled/affectnet")
    assert labeler_picture_conflicts(["data/clean"], LABELED, params) == []
    (tmp_path / "data" / "original" / "fer2013" / "manifest.parquet").unlink()
    missing = labeler_picture_conflicts(["data/clean"], LABELED, params)
    assert "data/original/fer2013, the training data of fer2013, is not here to check (dvc pull)" in missing


def test_autolabel_depends_on_every_manifest_its_picture_check_reads(stages):
    from fersynth.checks.leakage import model_variants

    deps = set(stages["autolabel"]["deps"])
    pairs = PARAMS["compare"]["pairs"]
    compared = {v for c, pair in pairs.items() for m in (c, pair["baseline"]) for v in model_variants(PARAMS, m)}
    compared -= {LABELED}
    guarded = {
        PARAMS["evaluate"]["test_sets"][t]
        for c, pair in pairs.items()
        if LABELED in model_variants(PARAMS, c)
        for t in pair["test_sets"]
    }
    missing = {v for v in compared | guarded if v not in deps and f"{v}/manifest.parquet" not in deps}
    assert not missing
