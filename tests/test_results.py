import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fersynth.cli import main
from fersynth.report.results import RENDERERS, render

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_show_what_the_committed_metrics_say():
    """Every number in the result tables of README.md and docs/*.md comes from the committed metrics files:
    after a `dvc repro` that moves them, `fersynth results --readme FILE --write` must run on each before the
    commit. Each table appears once (the README: timings; docs/experiments.md and docs/statistics.md: the rest)."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        found += [(name, doc.name) for name in re.findall(r"<!-- results:([a-z_]+) -->\n", text)]
        assert render(text, ROOT / "metrics") == text, f"stale tables: run `fersynth results --readme {doc} --write`"
    assert sorted(name for name, _ in found) == sorted(RENDERERS), found  # every table, each once
    assert ("timings", "README.md") in found


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


@pytest.fixture
def metrics(tmp_path):
    root = tmp_path / "metrics"
    trial = {"test_accuracy": 0.8}
    _write(
        root / "train" / "base.json",
        {"test_accuracy": 0.8, "test_accuracy_ci95": [0.7, 0.9], "trials": [trial, trial | {"test_accuracy": 0.8}],
         "rows": {"train": 100, "synthetic_train": 10}, "floor": {"test_accuracy": 0.85}},
    )  # fmt: skip
    _write(root / "evaluate" / "floor.json", {"floor": {"base": {"t": 0.85}}, "below_floor": [{"model": "base"}]})
    _write(root / "evaluate" / "true_labels.json", {"base": {"fer2013": {"accuracy": 0.9, "images": 88}}})
    entry = {"images": 88, "difference": 0.05, "difference_low": 0.01, "difference_high": 0.09, "p_holm": 0.012,
             "verdict": "helps", "seeds_needed": {"2": None, "5": 7, "10": 2}}  # fmt: skip
    _write(root / "compare.json", {"cand_vs_base": {"t": entry}})
    _write(root / "compare" / "controls.json", {"cand_on_t": {"expected": "hurts", "verdict": "helps", "found": False}})
    verdicts = {"helps": {"share": 0.85, "se": 0.08, "ci95": [0.621, 0.968]}, "hurts": {"share": 0.0, "se": 0.0}}
    verdicts["inconclusive"] = {"share": 0.15, "se": 0.08}
    arm = {"true_effect": {"mean": 0.08, "low": 0.06, "high": 0.1}, "replications": 20, "verdicts": verdicts}
    arm["seeds_per_side"] = 5
    arm["verdicts_old_df_rule"] = {"helps": {"share": 0.15}, "hurts": {"share": 0.0}}
    arm["unadjusted_p_below_alpha"] = {"share": 0.95, "ci95": [0.751, 0.999]}
    arm["recipe"] = {"commit": "abc1234", "min_steps": 600}
    null = arm | {"recipe": {}}  # an arm measured before arms recorded their recipe
    arms = {"benefit": arm, "null": null}
    power = {"arms": arms, "met": {"benefit": True}, "family": {"size": 18}, "test_images": 88}
    _write(root / "bench" / "power.json", power)
    targets = {"make_repro_seconds_max": 600, "dvc_repro_seconds_max": 300, "make_test_seconds_max": 720}
    _write(
        root / "bench" / "pipeline.json",
        {"commit": "abcdef123", "date": "d2", "targets": targets | {"noop_repro_seconds_max": 3},
         "met": {"make_repro": False, "dvc_repro": True, "make_test": True, "noop_repro": True},
         "make_repro": {"seconds": 690, "dvc_repro_seconds": 270, "stages": 75, "by_kind_seconds": {"train": 120}},
         "reproduced": {"git_status_clean": False}, "noop_repro_seconds": 2.04,
         "repro_measured_at": {"commit": "0123456789", "date": "d1"},
         "make_test": {"seconds": 540, "pytest": "9 passed"}},
    )  # fmt: skip
    return root


BLOCKS = ("experiments", "comparisons", "controls", "power", "timings")
README = "intro\n" + "".join(f"<!-- results:{n} -->\nold {n}\n<!-- /results:{n} -->\n" for n in BLOCKS) + "outro 12.5\n"


def test_each_table_is_rendered_from_its_file_and_the_text_around_it_is_kept(metrics):
    out = render(README, metrics)
    assert out.startswith("intro\n") and out.endswith("outro 12.5\n") and not any(f"old {n}\n" in out for n in BLOCKS)
    assert "| base | 100 (10) | 2 | 80.0 [70.0, 90.0] | 0.0 | 85.0 | **yes** | 90.0 |" in out  # below its floor
    assert "below their floor (1 models x test sets): 1." in out
    assert "| cand vs base | t | 88 | +5.0 [+1.0, +9.0] | 0.012 | helps | — / 7 / 2 |" in out
    assert "| cand_on_t | hurts | helps | **no** |" in out
    power_row = "| benefit | +8.0 [+6.0, +10.0] | 20 | 85% [62, 97] | 0% (SE 0) | 15% (SE 8) "
    assert power_row + "| 95% [75, 100] | 15% / 0% | 600 updates, abc1234 | yes |" in out
    assert "| null | +8.0 [+6.0, +10.0] | 20 |" in out and "| 15% / 0% | — | — |" in out
    assert "88 test images, 5 seeds a side, every verdict inside the shipped family of 18 tests" in out
    assert "`make repro`: **11.5 min** (target 10: **not met**)" in out
    assert "its `dvc repro` 4.5 min (target 5: met; 75 stages; minutes by kind: train 2.0)" in out
    assert "`git status` afterwards: **dirty** (fresh clone of 0123456, d1)" in out  # where the repro was measured
    assert "`make test`: **9.0 min** (target 12: met), the venv included (9 passed; fresh clone of abcdef1, d2)" in out
    assert "no-op `dvc repro`: 2.0 s (met)" in out
    assert render(out, metrics) == out  # rendering is idempotent


def test_an_unknown_table_name_is_an_error_and_the_cli_checks_before_it_writes(metrics, tmp_path):
    with pytest.raises(ValueError, match="results:nosuch has no renderer"):
        render("<!-- results:nosuch -->\n<!-- /results:nosuch -->\n", metrics)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    args = ["results", "--readme", str(readme), "--metrics", str(metrics)]
    stale = CliRunner().invoke(main, args)
    assert stale.exit_code == 1 and readme.read_text() == README  # a check does not write
    assert CliRunner().invoke(main, [*args, "--write"]).exit_code == 0
    assert readme.read_text() == render(README, metrics)
    assert CliRunner().invoke(main, args).exit_code == 0


def test_stage_kinds_measured_before_a_rename_are_shown_under_their_current_names(metrics):
    bench = json.loads((metrics / "bench" / "pipeline.json").read_text())
    old = {"train": 120.0, "reclassify": 90.0, "relabel": 6.0, "agr-predict": 30.0, "validate-evaluator": 66.0}
    bench["make_repro"]["by_kind_seconds"] = old
    _write(metrics / "bench" / "pipeline.json", bench)
    out = render(README, metrics)
    # reclassify's seconds join relabel's, and the kinds are ordered by their new totals
    assert "minutes by kind: train 2.0, relabel 1.6, validate-balanced-set 1.1, demographics-predict 0.5)" in out
    assert not any(name in out for name in ("reclassify", "agr-", "evaluator"))
