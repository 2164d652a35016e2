import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fersynth.evaluate.evaluate import (
    EvaluateConfig,
    RobustnessConfig,
    evaluate,
    evaluate_model,
    perturb,
    summarize_evaluation,
)
from fersynth.ingest import ingest
from fersynth.modeling.data import InputConfig
from fersynth.train.recipe import TrainConfig
from fersynth.train.train import train
from tests.conftest import with_true_demographics


@pytest.fixture(scope="module")
def evaluated(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    mp = pytest.MonkeyPatch()
    mp.setenv("DVC_ROOT", str(root))
    for name in ("fer2013", "nhfi", "casme2"):
        ingest(name, tiny_demo / name, root / name)
    with_true_demographics(root / "nhfi", tiny_demo / "ground_truth" / "nhfi.csv")
    config = TrainConfig(variants=(str(root / "fer2013"),), input=InputConfig(size=32), epochs=1, batch_size=16)
    train(config, root / "model", run_name="tiny")
    train(replace(config, trials=2, seed=5), root / "trials", run_name="trials")
    result = evaluate(evaluated_config(root, tiny_demo), root / "out")
    yield root, result
    mp.undo()


def evaluated_config(root, demo):
    return EvaluateConfig(
        models={"tiny": str(root / "model"), "trials": str(root / "trials")},
        test_sets={"fer2013": str(root / "fer2013"), "nhfi": str(root / "nhfi"), "casme2": str(root / "casme2")},
        fairness_on="nhfi",
        robustness_on=("fer2013",),
        robustness=RobustnessConfig(lighting=(0.5,), resolution=(4,), noise=(25.0,)),
        ground_truth=str(demo),
    )


def test_cross_dataset_matrix_covers_comparable_test_sets(evaluated):
    root, result = evaluated
    row = result["cross_dataset"]["tiny"]
    assert row["casme2"] is None  # another label space
    assert 0 <= row["fer2013"] <= 1 and 0 <= row["nhfi"] <= 1
    assert json.loads((root / "out" / "cross_dataset.json").read_text()) == result["cross_dataset"]
    assert Image.open(root / "out" / "cross_dataset.png").size[0] > 200


def test_per_class_confusion_and_predictions_agree(evaluated):
    root, result = evaluated
    predictions = pd.read_csv(root / "out" / "predictions" / "tiny" / "nhfi.csv")
    report = json.loads((root / "out" / "per_class" / "tiny" / "nhfi.json").read_text())
    assert report["accuracy"] == pytest.approx(predictions["correct"].mean())
    assert result["cross_dataset"]["tiny"]["nhfi"] == pytest.approx(report["accuracy"], abs=1e-4)
    confusion = pd.read_csv(root / "out" / "confusion" / "tiny" / "nhfi.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(predictions)
    assert (root / "out" / "confusion_figures" / "tiny" / "fer2013.png").exists()  # a figure for figures_on
    assert not (root / "out" / "confusion_figures" / "tiny" / "nhfi.png").exists()  # a CSV only for the others
    assert not list((root / "out" / "confusion").rglob("*.png"))  # dvc plots draws the CSVs: no matrix twice
    listed = json.loads((root / "out" / "confusion_figures" / "tiny" / "figures.json").read_text())
    assert listed == {"confusion_png": ["fer2013"]}  # never an empty folder (Git would drop a DVC output)


def test_one_model_is_rescored_alone_and_the_tables_gather_every_model(evaluated, tiny_demo, tmp_path):
    """DVC runs one evaluate stage per model: re-scoring one model rewrites its files only, and the summary
    tables come out the same as from the all-in-one run."""
    root, result = evaluated
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    config = evaluated_config(root, tiny_demo)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "trials" in p.parts}
    (out / "cross_dataset.json").unlink()
    evaluate_model(config, "tiny", out)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "trials" in p.parts}
    assert after == before  # the other model's files were not touched
    assert json.loads((out / "scores" / "tiny.json").read_text())["accuracy"] == result["cross_dataset"]["tiny"]
    assert summarize_evaluation(config, out)["cross_dataset"] == result["cross_dataset"]
    assert (out / "cross_dataset.json").read_bytes() == (root / "out" / "cross_dataset.json").read_bytes()
    (out / "scores" / "trials.json").unlink()
    with pytest.raises(FileNotFoundError, match="trials"):
        summarize_evaluation(config, out)
    with pytest.raises(ValueError, match="unknown model 'nosuch'"):
        evaluate_model(config, "nosuch", out)


def test_fairness_groups_and_robustness(evaluated):
    root, result = evaluated
    fairness = result["fairness"]["tiny"]
    assert set(fairness) == {"gender", "age_group", "ethnicity"}
    gender = fairness["gender"]
    assert gender["gap"] == pytest.approx(gender["per_group"][gender["best"]] - gender["per_group"][gender["worst"]])
    robust = result["robustness"]["tiny"]["fer2013"]
    assert set(robust) == {"clean", "lighting_0.5", "resolution_4", "noise_25"}


def test_a_model_trained_in_trials_is_scored_by_every_trial(evaluated):
    root, result = evaluated
    predictions = pd.read_csv(root / "out" / "predictions" / "trials" / "fer2013.csv")
    assert sorted(predictions["seed"].unique()) == [5, 6]
    per_seed = predictions.groupby("seed")["correct"].mean()
    assert result["cross_dataset"]["trials"]["fer2013"] == pytest.approx(per_seed.mean(), abs=1e-4)
    report = json.loads((root / "out" / "per_class" / "trials" / "fer2013.json").read_text())
    assert report["trials"] == 2 and report["accuracy"] == pytest.approx(per_seed.mean())
    confusion = pd.read_csv(root / "out" / "confusion" / "trials" / "fer2013.csv")
    assert len(confusion) == len(predictions)  # both trials' predictions pooled
    assert result["macro_f1"]["trials"]["fer2013"] == pytest.approx(report["macro avg"]["f1"], abs=1e-4)


def test_compare_pairs_the_two_models_on_the_same_images(evaluated):
    from fersynth.compare.compare import CompareConfig, compare

    root, _ = evaluated
    config = CompareConfig(pairs={"trials": {"baseline": "tiny", "test_sets": ["fer2013", "nhfi"]}}, min_seeds=2)
    test_sets = {"fer2013": str(root / "fer2013"), "nhfi": str(root / "nhfi")}
    result = compare(config, root / "out", test_sets, root / "compare.json")
    assert json.loads((root / "compare.json").read_text()) == result
    on_nhfi = result["trials_vs_tiny"]["nhfi"]
    matrix = json.loads((root / "out" / "cross_dataset.json").read_text())
    # one trial against two: only seed pair (tiny's seed, trials' first seed) is compared
    first = pd.read_csv(root / "out/predictions/trials/nhfi.csv").query("seed == 5")["correct"].mean()
    assert on_nhfi["difference"] == pytest.approx(first - matrix["tiny"]["nhfi"], abs=2e-4)
    assert on_nhfi["trials"] == [1, 2] and on_nhfi["images"] == len(pd.read_csv(root / "out/predictions/tiny/nhfi.csv"))
    assert on_nhfi["verdict"] == "too few seeds (1 < 2)" and on_nhfi["difference_low"] is None
    assert set(on_nhfi["group_difference"]) == {"gender", "age_group", "ethnicity"}
    assert set(on_nhfi["f1_difference"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


def test_perturbations_do_what_they_say():
    rng = np.random.default_rng(0)
    images = rng.integers(60, 200, (4, 1, 32, 32), dtype=np.uint8)
    darker = perturb(images, "lighting", 0.5, 0)
    assert darker.mean() == pytest.approx(images.mean() / 2, abs=1)
    blurred = perturb(images, "resolution", 4, 0)
    assert (
        blurred.shape == images.shape
        and np.diff(blurred.astype(int), axis=-1).std() < np.diff(images.astype(int), axis=-1).std() / 2
    )
    noisy = perturb(images, "noise", 25, 0)
    assert 15 < (noisy.astype(int) - images).std() < 30


def test_a_test_set_mixing_real_and_generated_faces_is_also_scored_per_part():
    from fersynth.evaluate.evaluate import _by_origin

    rows = pd.DataFrame({"synthetic": [False, False, True, True, True, None]})
    labels = np.array([0, 1, 2, 3, 4, 5])
    predicted = {0: np.array([0, 9, 2, 9, 9, 5]), 1: np.array([0, 1, 9, 9, 9, 9])}
    # real rows: 0, 1, 5 (None counts as real) -> seed 0: 2/3, seed 1: 2/3; generated: 1/3 and 0
    assert _by_origin("balanced_set", rows, labels, predicted) == {
        "balanced_set_real": pytest.approx(0.6667, abs=1e-4),
        "balanced_set_generated": pytest.approx(0.1667, abs=1e-4),
    }
    assert _by_origin("fer2013", rows.assign(synthetic=False), labels, predicted) == {}


def test_every_model_is_scored_beside_its_floor_and_against_the_true_labels(evaluated):
    """The floor (HOG + logistic regression on the model's own train rows) is scored on every comparable test
    set; a cell below it is listed; accuracy against the demo's hidden labels counts the planted flips."""
    root, result = evaluated
    floor = json.loads((root / "out" / "floor.json").read_text())
    assert set(floor["floor"]) == {"tiny", "trials"} and set(floor["floor"]["tiny"]) == {"fer2013", "nhfi"}
    below = {(c["model"], c["test_set"]) for c in floor["below_floor"]}
    for model, tests in floor["floor"].items():
        for test, value in tests.items():
            assert ((model, test) in below) == (result["cross_dataset"][model][test] < value)
    truth = json.loads((root / "out" / "true_labels.json").read_text())
    fer = truth["tiny"]["fer2013"]
    predictions = pd.read_csv(root / "out" / "predictions" / "tiny" / "fer2013.csv")
    assert 0 < fer["images"] <= len(predictions) and 0 <= fer["accuracy"] <= 1
    given = predictions["correct"].mean()
    # every flipped label the model gets "wrong" against the given labels may be right against the truth
    assert abs(fer["accuracy"] - given) <= fer["flipped"] / fer["images"] + 1e-9


def test_one_class_json_flags_exactly_the_cells_whose_predictions_name_one_class(evaluated):
    """Recomputed from the predictions CSVs evaluate wrote: a cell is flagged iff a trial names one class for
    >= 90% of the images (a class under 90% of the labels) or the mean accuracy is at most the most
    frequent label's share; the reasons say which."""
    root, result = evaluated
    report = json.loads((root / "out" / "one_class.json").read_text())
    flagged = {(c["model"], c["test_set"]): c for c in report["flagged"]}
    assert report["share"] == 0.9 and set(report["top_share"]) == {"tiny", "trials"}
    for model, tests in report["top_share"].items():
        assert set(tests) == {"fer2013", "nhfi"}  # the comparable test sets (casme2: another label space)
        for test, top_share in tests.items():
            predictions = pd.read_csv(root / "out" / "predictions" / model / f"{test}.csv")
            shares = predictions.groupby("seed")["predicted"].agg(lambda p: p.value_counts(normalize=True).iloc[0])
            label_share = predictions.drop_duplicates("key")["label"].value_counts(normalize=True)
            one_class = [
                int(seed)
                for seed, group in predictions.groupby("seed")
                if shares[seed] >= 0.9 and label_share.get(group["predicted"].mode().iloc[0], 0) < 0.9
            ]
            accuracy = round(float(predictions["correct"].mean()), 4)
            assert top_share == pytest.approx(shares.max(), abs=1e-4)
            expected = bool(one_class) or accuracy <= round(float(label_share.max()), 4)
            assert ((model, test) in flagged) == expected, (model, test, shares.to_dict(), accuracy)
            if (model, test) in flagged:
                assert flagged[model, test]["one_class_seeds"] == one_class
                assert any("names" in r or "no better than always naming" in r for r in flagged[model, test]["reasons"])
    assert report["models_flagged"] == len({model for model, _ in flagged})
