import json
import re
from pathlib import Path

import yaml

from fersynth.compare.summary import (
    answer_summary,
    comparison_summary,
    experiment_summary,
    short_verdict,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]
DECLARED = ["metrics/summary/answers.json", "metrics/summary/comparisons.json", "metrics/summary/experiments.json"]


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
    "fer2013_sdxl_vs_fer2013": {
        "fer2013": _entry(0.05, "helps", mde=0.03),
        "balanced_set": _entry(
            0.03,
            "descriptive (mixes real and generated faces: its parts are tested)",
            real=_entry(0.01, "inconclusive (detects +-7.3 pts)", mde=0.073),
            generated=_entry(0.06, "helps", mde=0.04),
        ),
    },
    "generated_casme2_vs_casme2": {"casme2": _entry(0.0, "not testable (one subject)")},  # no mde: not tested
    "hybrid_vs_fer2013": {
        "affectnet": _entry(0.0, "too few seeds (3 < 5)", seeds=3),
        "fer2013": _entry(0.0, "identical predictions: no difference to test"),
        "sfhq": _entry(-0.04, "hurts", mde=0.02),
    },
}
CONTROLS = {
    "control_benefit_on_fer2013": {"expected": "helps", "found": True, "verdict": "helps"},
    "control_null_on_fer2013": {"expected": "inconclusive", "found": False, "verdict": "hurts"},
}


def test_answers_hold_every_judged_scope_with_its_short_verdict_in_the_order_of_comparisons():
    answers, comparisons = answer_summary(COMPARED, CONTROLS), comparison_summary(COMPARED)
    assert answers == {
        "fer2013_sdxl_vs_fer2013": {
            "balanced_set_real": "inconclusive",
            "balanced_set_generated": "helps",
            "fer2013": "helps",
        },
        "generated_casme2_vs_casme2": {"casme2": "not testable"},
        "hybrid_vs_fer2013": {"affectnet": "too few seeds", "fer2013": "no difference to test", "sfhq": "hurts"},
        "controls": {"control_benefit_on_fer2013": "found", "control_null_on_fer2013": "NOT found"},
    }
    assert list(answers) == [*comparisons, "controls"]  # the controls after the pairs
    assert all(list(answers[pair]) == list(scopes) for pair, scopes in comparisons.items())


def test_a_verdict_of_an_unknown_kind_passes_through_unchanged():
    assert short_verdict("inconclusive (detects +-14.3 pts)") == "inconclusive"
    assert short_verdict("not testable (detects only +-25.0 pts > 20)") == "not testable"
    assert short_verdict("same images right and wrong in every seed pair: no difference to test") == (
        "no difference to test"
    )
    for unknown in ("helps a little (maybe)", "descriptive (unadjusted)", "", None):
        assert short_verdict(unknown) == unknown
    compared = {"b_vs_a": {"t": _entry(0.0, "a new kind (with detail)")}}
    assert answer_summary(compared, {})["b_vs_a"] == {"t": "a new kind (with detail)"}


def test_comparisons_keep_the_numbers_and_the_detectable_effect_but_not_the_verdict():
    summary = comparison_summary(COMPARED)
    assert list(summary["fer2013_sdxl_vs_fer2013"]) == ["balanced_set_real", "balanced_set_generated", "fer2013"]
    assert summary["fer2013_sdxl_vs_fer2013"]["balanced_set_real"] == {
        "difference": 0.01, "low": -0.01, "high": 0.03, "p_holm": 0.01, "detectable": 0.073, "seeds": 6,
    }  # fmt: skip
    assert summary["generated_casme2_vs_casme2"]["casme2"]["detectable"] is None  # never tested: nothing quoted
    lines = [line for scopes in summary.values() for line in scopes.values()]
    assert all("verdict" not in line and "class_difference" not in line for line in lines)


def test_experiments_carry_accuracy_macro_f1_and_floor():
    trained = {"a": {"test_accuracy": 0.8, "test_macro_f1": 0.7, "floor": {"test_accuracy": 0.6}, "seeds": [0, 1]}}
    trained["single"] = {"test_accuracy": 0.5, "test_macro_f1": 0.4}  # one trial, no floor fitted
    assert experiment_summary(trained) == {
        "a": {"accuracy": 0.8, "macro_f1": 0.7, "floor": 0.6},
        "single": {"accuracy": 0.5, "macro_f1": 0.4, "floor": None},
    }


def _summarized(tmp_path) -> Path:
    (tmp_path / "compare.json").write_text(json.dumps(COMPARED))
    (tmp_path / "controls.json").write_text(json.dumps(CONTROLS))
    (tmp_path / "train").mkdir(exist_ok=True)
    for name in ("fer2013", "fer2013_sdxl"):
        (tmp_path / "train" / f"{name}.json").write_text(json.dumps({"test_accuracy": 0.8, "test_macro_f1": 0.7}))
    summarize(tmp_path / "compare.json", tmp_path / "controls.json", tmp_path / "train", tmp_path / "summary")
    return tmp_path / "summary"


def test_the_three_files_are_written_deterministically(tmp_path):
    out = _summarized(tmp_path)
    assert json.loads((out / "answers.json").read_text()) == answer_summary(COMPARED, CONTROLS)
    before = {name: (out / name).read_bytes() for name in ("answers.json", "comparisons.json", "experiments.json")}
    _summarized(tmp_path)
    assert {name: (out / name).read_bytes() for name in before} == before


def _flatten(value: dict, prefix: str = "") -> list[str]:
    names = []
    for key, item in value.items():
        names += _flatten(item, f"{prefix}{key}.") if isinstance(item, dict) else [f"{prefix}{key}"]
    return names


def exp_show_columns(metrics: dict[str, dict], params: dict) -> list[str]:
    """The column names `dvc exp show` gives (DVC 3, dvc/repo/experiments/show.py): "Experiment", then every
    metrics file's leaves by file path, keys in file order, joined with "."; then the params' leaves; a name
    that two files share is prefixed with "<path>:"."""
    files = {path: _flatten(data) for path, data in sorted(metrics.items())} | {"params.yaml": _flatten(params)}
    counts: dict[str, int] = {"Experiment": 1}
    for names in files.values():
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    headers = [name if counts[name] == 1 else f"{path}:{name}" for path, names in files.items() for name in names]
    return ["Experiment", *headers]


def _kept(keep: str, columns: list[str]) -> list[str]:
    # `--drop '.*' --keep RE`: DVC keeps the columns RE matches from their start (re.match, not fullmatch)
    return [column for column in columns if re.compile(keep).match(column)]


def test_the_docs_keep_filters_keep_exactly_the_columns_they_name(tmp_path):
    out = _summarized(tmp_path)
    metrics = {f"metrics/summary/{p.name}": json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    columns = exp_show_columns(metrics, yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert "fer2013_sdxl_vs_fer2013.fer2013.difference" in columns and "fer2013.accuracy" in columns
    verdicts = [f"{pair}.{scope}" for pair, scopes in comparison_summary(COMPARED).items() for scope in scopes]
    controls = [f"controls.{name}" for name in CONTROLS]
    swept = [column for column in columns if column.endswith(".synthetic_per_class")]  # params.yaml's, e.g. train.*
    assert "train.fer2013_sdxl.synthetic_per_class" in swept
    expected = {  # what each filter of the docs keeps, by what it is for
        "answers": ["Experiment", *verdicts, *controls],
        "sweep": ["Experiment", *(f"fer2013_sdxl_vs_fer2013.fer2013{f}" for f in ("", ".difference", ".low", ".high"))],
        "team": ["Experiment", "fer2013_sdxl_vs_fer2013.fer2013", "fer2013_sdxl_vs_fer2013.fer2013.difference"],
    }
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    docs = "\n".join(re.sub(r"\\\n\s*", "", d.read_text()) for d in documents)  # continuation lines joined
    filters = re.findall(r"dvc exp show --drop '\.\*' --keep '([^']+)'", docs)
    assert len(filters) == 3, filters
    for keep in filters:
        kind = "answers" if "synthetic_per_class" not in keep else ("sweep" if ".low" in keep else "team")
        assert _kept(keep, columns) == expected[kind] + (swept if kind != "answers" else []), keep


def test_dvc_exp_show_lists_the_answers_first(tmp_path):
    metrics = {name: json.loads((ROOT / name).read_text()) for name in DECLARED}
    columns = exp_show_columns(metrics, {})[1:]
    answers = len(_flatten(metrics["metrics/summary/answers.json"]))
    assert all(re.fullmatch(r"[^.]+\.[^.]+", column) for column in columns[:answers])  # <pair>.<scope>
    assert columns[answers].endswith(".difference")  # then the numbers


def _leaves(value) -> int:
    return sum(_leaves(v) for v in value.values()) if isinstance(value, dict) else 1


def test_dvc_declares_only_the_small_summaries_as_metrics_answers_first():
    """`dvc exp show` and `dvc metrics show` list every leaf of every declared metrics file, ordered by path: keep
    that to the answer (the detail stays in ordinary outputs), the short verdicts first."""
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    declared = [next(iter(item)) if isinstance(item, dict) else item for item in pipeline.get("metrics", [])]
    for stage in pipeline["stages"].values():
        for item in stage.get("do", stage).get("metrics", []):
            declared.append(next(iter(item)) if isinstance(item, dict) else item)
    assert declared == DECLARED == sorted(DECLARED)
    leaves = sum(_leaves(json.loads((ROOT / path).read_text())) for path in declared)  # each must exist
    assert leaves <= 200, f"{leaves} metric columns in dvc exp show"


def test_answers_follow_the_study_order_and_a_controls_pair_is_its_found_line():
    pairs = {  # params.yaml compare.pairs: the study's order, not the alphabet's
        "hybrid": {"baseline": "fer2013", "test_sets": ["sfhq", "fer2013", "affectnet"]},
        "fer2013_sdxl": {"baseline": "fer2013", "test_sets": ["fer2013", "balanced_set"]},
        "control_benefit": {"baseline": "control_scarce", "test_sets": ["fer2013"]},
    }
    compared = COMPARED | {"control_benefit_vs_control_scarce": {"fer2013": _entry(0.08, "helps", mde=0.02)}}
    answers = answer_summary(compared, CONTROLS, pairs)
    # pairs in compare.pairs order, then any pair it does not name (sorted); scopes in the pair's test_sets order
    assert list(answers) == ["hybrid_vs_fer2013", "fer2013_sdxl_vs_fer2013", "generated_casme2_vs_casme2", "controls"]
    assert list(answers["hybrid_vs_fer2013"]) == ["sfhq", "fer2013", "affectnet"]
    assert list(answers["fer2013_sdxl_vs_fer2013"]) == ["fer2013", "balanced_set_real", "balanced_set_generated"]
    # the planted control's own pair is not a second answer: its line is controls.<control>
    assert "control_benefit_vs_control_scarce" not in answers
    assert answers["controls"]["control_benefit_on_fer2013"] == "found"
    # its numbers stay in comparisons.json, in the same order as the answers
    comparisons = comparison_summary(compared, pairs)
    assert list(comparisons)[:2] == ["hybrid_vs_fer2013", "fer2013_sdxl_vs_fer2013"]
    assert comparisons["control_benefit_vs_control_scarce"]["fer2013"]["difference"] == 0.08


def _flat_keys(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flat_keys(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def test_the_default_dvc_exp_show_opens_on_the_verdicts():
    """`dvc exp show` in a terminal lays its table out at 1,024 characters (its pager's width) and collapses
    columns from the right; `COLUMNS=1024 dvc exp show --no-pager` is the same layout. Every column costs a
    separator, so the table must stay small enough that the first metric columns, answers.json's verdicts,
    are drawn: at least the three synthetic-data questions on every test set they are compared on."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, COLUMNS="1024", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--no-pager"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout.splitlines()  # fmt: skip
    header = shown[1].split()
    answers = list(_flat_keys(json.loads((ROOT / "metrics" / "summary" / "answers.json").read_text())))
    drawn = header[2 : header.index("…")]  # after Experiment and Created, up to the first collapsed column
    assert drawn == answers[: len(drawn)], "the first metric columns drawn are not the verdicts"
    questions = [a for a in answers if a.split("_vs_")[0] in ("fer2013_sdxl", "fer2013_smote", "fer2013_smote_only")]
    assert set(questions) <= set(drawn), f"verdicts collapsed out of view: {sorted(set(questions) - set(drawn))}"
    row = shown[3].split()
    assert row[2 : 2 + len(drawn)] and all(cell[0].isalpha() for cell in row[2 : 2 + len(drawn)])  # words, not …
