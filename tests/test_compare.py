import json

import numpy as np
import pandas as pd
import pytest

from fersynth.compare.compare import CompareConfig, compare, compare_predictions, decide, plot_records
from fersynth.config import load_params

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def _predictions(
    correct_by_seed: dict[int, np.ndarray], labels: np.ndarray | None = None, answers: dict | None = None
) -> pd.DataFrame:
    """evaluate's predictions CSV; ``answers`` (seed -> predicted class) default: the label where correct,
    the next class where not."""
    frames = []
    for seed, correct in correct_by_seed.items():
        keys = [f"k{i:03d}" for i in range(len(correct))]
        label = labels if labels is not None else np.zeros(len(correct), int)
        predicted = answers[seed] if answers else np.where(correct, label, (np.asarray(label) + 1) % len(CLASSES))
        frame = {"seed": seed, "key": keys, "label": label, "predicted": predicted, "correct": correct}
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def _decided(baseline, candidate, config, rows=None):
    entry, tested = compare_predictions(baseline, candidate, config, rows, CLASSES)
    decide(tested, config)
    return entry


def test_a_real_gain_helps_its_reverse_hurts_and_no_change_is_inconclusive_with_its_detectable_size():
    rng = np.random.default_rng(0)
    n, seeds = 300, range(5)
    base = {s: rng.random(n) < 0.5 for s in seeds}
    better = {s: base[s] | (rng.random(n) < 0.6) for s in seeds}  # right wherever the baseline is, and more
    config = CompareConfig()
    gain = _decided(_predictions(base), _predictions(better), config)
    expected = np.mean([better[s].mean() - base[s].mean() for s in seeds])
    assert gain["difference"] == pytest.approx(expected, abs=1e-4) and gain["verdict"] == "helps"
    assert gain["difference_low"] > 0 and gain["p_holm"] < 0.05 and gain["seeds"] == 5
    worse = _decided(_predictions(better), _predictions(base), config)
    assert worse["verdict"] == "hurts" and worse["difference_high"] < 0
    noisy = {s: rng.random(n) < 0.5 for s in seeds}
    null = _decided(_predictions(base), _predictions(noisy), config)
    assert null["verdict"] == f"inconclusive (detects +-{100 * null['mde']:.1f} pts)"
    assert null["difference_low"] < 0 < null["difference_high"] and 0 < null["mde"] < 0.5


def test_seed_pairs_that_disagree_give_no_verdict_and_nothing_in_the_entry_claims_significance():
    """The old fer2013_smote entry: McNemar p < 0.001 and an image interval below zero next to
    "no significant difference". Here every seed pair differs by about 8 points, half up, half down."""
    rng = np.random.default_rng(4)
    n = 800
    base = {s: rng.random(n) < 0.4 for s in range(6)}
    shift = {s: (0.08 if s % 2 else -0.08) for s in range(6)}
    candidate = {s: rng.random(n) < 0.4 + shift[s] for s in range(6)}
    entry = _decided(_predictions(base), _predictions(candidate), CompareConfig())
    assert entry["verdict"].startswith("inconclusive")
    assert entry["difference_low"] < 0 < entry["difference_high"]
    assert entry["seed_share"] > 0.5
    # what a reader sees beside the verdict agrees with it: no interval that excludes zero after adjustment
    assert entry["difference_low_adjusted"] < 0 < entry["difference_high_adjusted"]
    assert entry["p_holm"] >= 0.05


def test_fewer_seed_pairs_than_min_seeds_get_no_verdict():
    rng = np.random.default_rng(0)
    base = {s: rng.random(100) < 0.5 for s in range(3)}
    other = {s: rng.random(100) < 0.5 for s in range(3)}
    entry = _decided(_predictions(base), _predictions(other), CompareConfig(min_seeds=5))
    assert entry["verdict"] == "too few seeds (3 < 5)" and entry["p_holm"] is None and entry["mde"] is None
    with pytest.raises(ValueError, match="min_seeds"):
        CompareConfig(min_seeds=1)


def test_identical_models_read_no_difference_to_test_and_stay_out_of_the_holm_family():
    """Two models that score every image alike in every seed pair (a recipe that changed nothing; two
    one-class models) used to read "inconclusive (detects +-0.0 pts)": the differences are all 0, their
    standard error is 0 and so is the minimum detectable effect. Nothing varies, so nothing is tested, and
    the comparison must not widen the Holm family of the real ones."""
    rng = np.random.default_rng(5)
    n, seeds = 200, range(5)
    labels = rng.integers(0, 7, n)
    base = {s: rng.random(n) < 0.5 for s in seeds}
    answers = {s: np.where(base[s], labels, (labels + 1) % 7) for s in seeds}
    config = CompareConfig()
    same = _predictions(base, labels, answers)
    entry, tested = compare_predictions(same, _predictions(base, labels, answers), config, None, CLASSES)
    # a real gain beside it: its p-value is adjusted over a family of one, not two
    better = {s: base[s] | (rng.random(n) < 0.3) for s in seeds}
    gain, gain_tested = compare_predictions(same, _predictions(better, labels), config, None, CLASSES)
    decide(tested + gain_tested, config)
    assert entry["verdict"] == "identical predictions: no difference to test"
    assert entry["difference"] == entry["difference_low"] == entry["difference_high"] == 0.0
    assert entry["mde"] is None and entry["p_holm"] is None and set(entry["seeds_needed"].values()) == {None}
    assert gain["verdict"] == "helps" and gain["p_holm"] == pytest.approx(gain["p_value"], abs=1e-4)
    # the same images right and wrong, but other wrong answers: not "identical predictions", still no test
    other_wrong = {s: np.where(base[s], labels, (labels + 2) % 7) for s in seeds}
    alike = _decided(same, _predictions(base, labels, other_wrong), config)
    assert alike["verdict"] == "same images right and wrong in every seed pair: no difference to test"
    assert "detects" not in alike["verdict"] and alike["mde"] is None


def test_only_paired_seeds_are_used_and_shuffled_prediction_rows_change_nothing():
    rng = np.random.default_rng(2)
    base = {s: rng.random(120) < 0.5 for s in range(5)}
    candidate = {s: rng.random(120) < 0.6 for s in range(6)}
    config = CompareConfig()
    entry = _decided(_predictions(base), _predictions(candidate), config)
    assert entry["trials"] == [5, 6] and entry["seeds"] == 5
    assert entry["accuracy"] == pytest.approx(np.mean([candidate[s].mean() for s in range(5)]), abs=1e-4)
    shuffled = _predictions(candidate).sample(frac=1, random_state=0)
    assert _decided(_predictions(base), shuffled, config) == entry


def test_real_and_generated_test_rows_are_reported_apart_with_class_and_group_intervals():
    """A balanced set mixing real and generated faces: the candidate gains only on the generated ones."""
    rng = np.random.default_rng(5)
    n = 400
    generated = np.arange(n) >= 200
    labels = np.arange(n) % 7
    base = {s: rng.random(n) < 0.4 for s in range(5)}
    candidate = {s: np.where(generated, base[s] | (rng.random(n) < 0.5), base[s]) for s in range(5)}
    rows = pd.DataFrame(
        {"synthetic": generated, "gender": np.where(np.arange(n) % 2, "male", "female")},
        index=[f"k{i:03d}" for i in range(n)],
    ).sample(frac=1, random_state=0)  # the manifest's order is not the predictions' order
    entry = _decided(_predictions(base, labels), _predictions(candidate, labels), CompareConfig(), rows)
    assert entry["real"]["images"] == 200 and entry["real"]["difference"] == 0.0
    assert entry["generated"]["verdict"] == "helps"
    # the candidate answers exactly as the baseline on the real faces: nothing to test (was "detects +-0.0")
    assert entry["real"]["verdict"] == "identical predictions: no difference to test"
    assert set(entry["class_difference"]) == set(CLASSES)
    assert set(entry["group_difference"]["gender"]) == {"female", "male"}
    for values in [*entry["class_difference"].values(), *entry["group_difference"]["gender"].values()]:
        assert values["low"] <= values["difference"] <= values["high"]
    records = plot_records({"a_vs_b": {"balanced_set": entry}})
    scopes = {r["scope"] for r in records}
    assert {"all", "real", "generated", "class:happy", "gender:male"} <= scopes
    assert all(r["low"] <= r["difference"] <= r["high"] for r in records)


def test_holm_is_applied_over_every_comparison_in_the_file(tmp_path):
    """Two pairs x one test set: each p_holm is the Holm adjustment of the two raw p-values."""
    from fersynth.compare.stats import holm

    rng = np.random.default_rng(6)
    n = 200
    base = {s: rng.random(n) < 0.5 for s in range(5)}
    models = {
        "base": base,
        "small_gain": {s: base[s] | (rng.random(n) < 0.08) for s in range(5)},
        "noise": {s: rng.random(n) < 0.5 for s in range(5)},
    }
    for name, correct in models.items():
        (tmp_path / "predictions" / name).mkdir(parents=True)
        _predictions(correct).to_csv(tmp_path / "predictions" / name / "t.csv", index=False)
        report = {c: {"precision": 0, "recall": 0, "f1": 0.1, "support": 1} for c in CLASSES}
        report["macro avg"] = {"f1": 0.1}
        (tmp_path / "per_class" / name).mkdir(parents=True)
        (tmp_path / "per_class" / name / "t.json").write_text(json.dumps(report))
    pairs = {"small_gain": {"baseline": "base", "test_sets": ["t"]}, "noise": {"baseline": "base", "test_sets": ["t"]}}
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "small_gain.json").write_text(json.dumps({"rows": {"synthetic_train": 60}}))
    result = compare(
        CompareConfig(pairs=pairs), tmp_path, {}, tmp_path / "compare.json", tmp_path / "plots", tmp_path / "train"
    )
    first, second = result["small_gain_vs_base"]["t"], result["noise_vs_base"]["t"]
    assert [first["p_holm"], second["p_holm"]] == pytest.approx(holm([first["p_value"], second["p_value"]]), abs=2e-4)
    assert first["p_holm"] >= first["p_value"]
    assert json.loads((tmp_path / "compare.json").read_text()) == result
    assert {r["comparison"] for r in json.loads((tmp_path / "plots" / "differences.json").read_text())} == {
        "small_gain_vs_base on t",
        "noise_vs_base on t",
    }
    sweep = {r["comparison"]: r for r in json.loads((tmp_path / "plots" / "sweep.json").read_text())}
    assert sweep["small_gain_vs_base on t"]["synthetic_train"] == 60
    assert sweep["noise_vs_base on t"]["synthetic_train"] is None  # no training metrics for it
    assert sweep["small_gain_vs_base on t"]["low"] == first["difference_low"]


def test_dvc_draws_the_differences_and_the_sweep_with_the_project_templates(tmp_path):
    """`dvc plots show` on a copy of dvc.yaml and its templates: both plots render with their intervals."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "configs", tmp_path / "configs")  # dvc.yaml's vars read configs/validate.yaml
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    shutil.copytree(root / ".dvc" / "plots", tmp_path / ".dvc" / "plots")
    entry = {"difference": 0.02, "difference_low": -0.05, "difference_high": 0.09, "verdict": "inconclusive"}
    result = {"a_vs_b": {"t": entry | {"class_difference": {"happy": {"difference": 0.1, "low": 0.0, "high": 0.2}}}}}
    (tmp_path / "metrics" / "compare").mkdir(parents=True)
    (tmp_path / "metrics" / "compare" / "differences.json").write_text(json.dumps(plot_records(result)))
    sweep = [{"comparison": "a_vs_b on t", "synthetic_train": 60, "difference": 0.02, "low": -0.05, "high": 0.09}]
    (tmp_path / "metrics" / "compare" / "sweep.json").write_text(json.dumps(sweep))
    shown = subprocess.run([dvc, "plots", "show", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    plots = json.loads(shown.stdout)["data"]
    differences = plots["metrics/compare/differences.json"][0]["content"]
    assert differences["title"]["text"].startswith("Synthetic data vs without")
    assert [r["scope"] for r in differences["data"]["values"]] == ["all", "class:happy"]
    layers = differences["spec"]["layer"]
    assert layers[1]["encoding"]["x"]["field"] == "low" and layers[1]["encoding"]["x2"]["field"] == "high"
    curve = plots["metrics/compare/sweep.json"][0]["content"]
    assert curve["title"]["text"].startswith("Sweep")
    assert curve["spec"]["encoding"]["x"]["field"] == "synthetic_train"


def test_every_compared_experiment_trains_enough_seeds_for_a_verdict_by_default():
    from pathlib import Path

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    needed = params["compare"]["min_seeds"]
    assert needed >= 5
    for candidate, pair in params["compare"]["pairs"].items():
        for model in (candidate, pair["baseline"]):
            assert params["train"][model].get("trials", 1) >= needed, model


def test_verdicts_and_adjusted_intervals_agree_over_many_families():
    """Whenever the Bonferroni interval shown excludes zero, the verdict is helps/hurts, and a helps/hurts
    verdict always comes with an unadjusted interval excluding zero on the same side."""
    rng = np.random.default_rng(8)
    for _ in range(30):
        base = {s: rng.random(150) < 0.5 for s in range(5)}
        candidate = {s: rng.random(150) < 0.5 + rng.uniform(-0.1, 0.15) for s in range(5)}
        config = CompareConfig(max_mde=1.0)  # every comparison tested, however weak
        entries, family = [], []
        for _ in range(3):
            entry, tested = compare_predictions(_predictions(base), _predictions(candidate), config, None, CLASSES)
            entries.append(entry)
            family += tested
        decide(family, config)
        for entry in entries:
            if entry["difference_low_adjusted"] > 0 or entry["difference_high_adjusted"] < 0:
                assert entry["verdict"] in ("helps", "hurts")
            if entry["verdict"] == "helps":
                assert entry["difference_low"] > 0
            if entry["verdict"] == "hurts":
                assert entry["difference_high"] < 0


def test_seeds_are_paired_by_value_and_gaps_in_the_predictions_are_errors():
    rng = np.random.default_rng(9)
    base = {s: rng.random(60) < 0.5 for s in range(5)}
    candidate = {s: rng.random(60) < 0.5 for s in range(1, 7)}  # seeds 1..6: shares 1..4 with the baseline
    entry, _ = compare_predictions(_predictions(base), _predictions(candidate), CompareConfig(), None, CLASSES)
    assert entry["seeds"] == 4 and list(entry["per_seed_difference"]) == ["1-1", "2-2", "3-3", "4-4"]
    holed = _predictions(candidate).drop(index=[3])  # seed 1 lost one image
    with pytest.raises(ValueError, match="no prediction"):
        compare_predictions(_predictions(base), holed, CompareConfig(), None, CLASSES)
    rows = pd.DataFrame({"synthetic": False}, index=[f"k{i:03d}" for i in range(59)])  # k059 is not in it
    with pytest.raises(ValueError, match="not in the test set's manifest"):
        compare_predictions(_predictions(base), _predictions(base), CompareConfig(), rows, CLASSES)


def test_small_subsets_get_no_interval_and_no_verdict():
    rng = np.random.default_rng(10)
    n = 120
    labels = np.where(np.arange(n) < 5, 1, 0)  # five disgust images
    generated = np.arange(n) >= n - 10  # ten generated rows
    base = {s: rng.random(n) < 0.5 for s in range(5)}
    other = {s: rng.random(n) < 0.5 for s in range(5)}
    rows = pd.DataFrame({"synthetic": generated}, index=[f"k{i:03d}" for i in range(n)])
    entry = _decided(_predictions(base, labels), _predictions(other, labels), CompareConfig(), rows)
    assert entry["class_difference"]["disgust"]["low"] is None
    assert entry["generated"]["difference_low"] is None and entry["generated"]["verdict"].startswith("too few images")
    assert entry["real"]["difference_low"] is not None
    # an undecided entry has the decided one's keys (the report's columns, `dvc exp show`), without values
    assert entry["generated"].keys() >= entry["real"].keys() - {"class_difference", "group_difference"}
    assert entry["generated"]["p_holm"] is None and entry["generated"]["mde"] is None


def test_one_subject_and_weak_test_sets_are_not_testable_and_stay_out_of_the_holm_family():
    """Only the answerable comparisons share the family: a one-subject set (CASME II's frames), a set whose
    detectable effect is above max_mde and a mixed set's whole (tested by its parts) add no test."""
    from fersynth.compare.compare import _summary

    rng = np.random.default_rng(14)
    n = 200
    base = {s: rng.random(n) < 0.5 for s in range(5)}
    gain = {s: base[s] | (rng.random(n) < 0.3) for s in range(5)}
    config = CompareConfig(max_mde=0.25)
    strong, strong_tested = compare_predictions(_predictions(base), _predictions(gain), config, None, CLASSES)
    one = pd.DataFrame({"subject": "sub01"}, index=[f"k{i:03d}" for i in range(n)])
    clip, clip_tested = compare_predictions(_predictions(base), _predictions(gain), config, one, CLASSES)
    mixed_rows = pd.DataFrame({"synthetic": np.arange(n) >= n // 2}, index=one.index)
    mixed, mixed_tested = compare_predictions(_predictions(base), _predictions(gain), config, mixed_rows, CLASSES)
    weak_d = rng.choice([-1.0, 1.0], size=(21, 5))  # 21 images, coin flips: detects only huge effects
    weak = {}
    weak_tested = _summary(weak, weak_d, 5)
    decide(strong_tested + clip_tested + mixed_tested + [weak_tested], config)
    assert strong["verdict"] == "helps" and clip["verdict"] == "not testable (one subject)"
    # with too few seeds too, the one subject is the reason (more seeds would not make it testable)
    few, few_gain = {s: base[s] for s in range(2)}, {s: gain[s] for s in range(2)}
    clip_few, clip_few_tested = compare_predictions(_predictions(few), _predictions(few_gain), config, one, CLASSES)
    decide(clip_few_tested, config)
    assert clip_few["seeds"] == 2 and clip_few["verdict"] == "not testable (one subject)"
    assert mixed["verdict"].startswith("descriptive") and mixed["p_holm"] is None
    assert mixed["real"]["verdict"] == mixed["generated"]["verdict"] == "helps"
    assert weak["verdict"].startswith("not testable (detects only +-") and weak["p_holm"] is None
    # the family is the strong set and the mixed set's two parts, nothing else
    from fersynth.compare.stats import holm

    p_values = [strong["p_value"], mixed["real"]["p_value"], mixed["generated"]["p_value"]]
    assert [strong["p_holm"], mixed["real"]["p_holm"], mixed["generated"]["p_holm"]] == pytest.approx(
        holm(p_values), abs=2e-4
    )
    # the described comparisons keep their interval and a plan for more seeds
    assert clip["difference_low"] is not None and set(clip["seeds_needed"]) == {"2", "5", "10"}


def test_seeds_needed_fall_as_the_effect_to_detect_grows():
    rng = np.random.default_rng(15)
    n = 300
    base = {s: rng.random(n) < 0.6 for s in range(5)}
    candidate = {s: np.where(rng.random(n) < 0.8, base[s], rng.random(n) < 0.6) for s in range(5)}
    entry = _decided(_predictions(base), _predictions(candidate), CompareConfig())
    needed = entry["seeds_needed"]
    assert needed["10"] is not None and needed["10"] <= (needed["5"] or 10**9) <= (needed["2"] or 10**9)
    assert needed["10"] >= 2
