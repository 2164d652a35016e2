import json
from pathlib import Path

import yaml

from fersynth.evaluate.summary import comparison_summary, experiment_summary, summarize

ROOT = Path(__file__).resolve().parents[1]


def _entry(difference, verdict, **extra):
    return {
        "difference": difference,
        "difference_low": round(difference - 0.02, 4),
        "difference_high": round(difference + 0.02, 4),
        "p_holm": 0.01,
        "seeds": 6,
        "verdict": verdict,
        "class_difference": {"happy": {"difference": 0.1, "low": 0.0, "high": 0.2}},
        **extra,
    }


COMPARED = {
    "b_vs_a": {
        "fer2013": _entry(0.05, "helps"),
        "evaluator": _entry(
            0.03,
            "descriptive (mixes real and generated faces: its parts are tested)",
            real=_entry(0.01, "inconclusive (detects +-7.3 pts)"),
            generated=_entry(0.06, "helps"),
        ),
    },
    "c_vs_a": {"casme2": _entry(0.0, "not testable (one subject)")},
}


def test_a_mixed_test_set_is_summarised_by_the_parts_that_carry_verdicts():
    summary = comparison_summary(COMPARED)
    assert list(summary["b_vs_a"]) == ["evaluator_real", "evaluator_generated", "fer2013"]
    assert summary["b_vs_a"]["evaluator_generated"] == {
        "verdict": "helps", "difference": 0.06, "low": 0.04, "high": 0.08, "p_holm": 0.01, "seeds": 6,
    }  # fmt: skip
    assert summary["c_vs_a"]["casme2"]["verdict"] == "not testable (one subject)"  # said, not hidden
    assert all("class_difference" not in line for scopes in summary.values() for line in scopes.values())


def test_experiments_carry_accuracy_macro_f1_floor_and_seeds():
    trained = {"a": {"test_accuracy": 0.8, "test_macro_f1": 0.7, "floor": {"test_accuracy": 0.6}, "seeds": [0, 1]}}
    trained["single"] = {"test_accuracy": 0.5, "test_macro_f1": 0.4}  # one trial, no floor fitted
    assert experiment_summary(trained) == {
        "a": {"accuracy": 0.8, "macro_f1": 0.7, "floor": 0.6, "seeds": 2},
        "single": {"accuracy": 0.5, "macro_f1": 0.4, "floor": None, "seeds": 1},
    }


def test_the_files_list_the_verdict_first_for_dvc_exp_show(tmp_path):
    (tmp_path / "compare.json").write_text(json.dumps(COMPARED))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.json").write_text(json.dumps({"test_accuracy": 0.8, "test_macro_f1": 0.7}))
    summarize(tmp_path / "compare.json", tmp_path / "train", tmp_path / "summary")
    text = (tmp_path / "summary" / "comparisons.json").read_text()
    first = json.loads(text)["b_vs_a"]["fer2013"]
    assert list(first)[0] == "verdict"  # exp show lists columns in file order: the answer comes first
    before = text
    summarize(tmp_path / "compare.json", tmp_path / "train", tmp_path / "summary")
    assert (tmp_path / "summary" / "comparisons.json").read_text() == before  # deterministic bytes


def _leaves(value) -> int:
    return sum(_leaves(v) for v in value.values()) if isinstance(value, dict) else 1


def test_dvc_declares_only_the_small_summaries_as_metrics():
    """`dvc exp show` and `dvc metrics show` list every leaf of every declared metrics file: keep that to the
    answer (the detail stays in ordinary outputs)."""
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    declared = set()
    for stage in pipeline["stages"].values():
        for item in stage.get("do", stage).get("metrics", []):
            declared.add(next(iter(item)) if isinstance(item, dict) else item)
    assert declared == {
        "metrics/summary/comparisons.json",
        "metrics/summary/experiments.json",
        "metrics/compare/controls.json",
    }
    leaves = sum(_leaves(json.loads((ROOT / path).read_text())) for path in declared if (ROOT / path).exists())
    assert leaves <= 200, f"{leaves} metric columns in dvc exp show"
