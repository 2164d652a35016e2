import json

import pytest
import yaml
from click.testing import CliRunner

from fersynth.cli import main
from fersynth.cli.group import RENAMED


def test_demo_ingest_validate_export_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {
        "demo": {"datasets": ["casme2"], "casme2_subjects": 4, "casme2_clips_per_subject": 2},
        "ingest": {"seed": 1, "sources": {"casme2": {"src": "data/demo/casme2", "frames": "apex"}}},
        "validate": {"suites": {"casme2": {"label_space": "casme2", "min_per_class": 0, "subjects_disjoint": True}}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--out", "data/demo"], catch_exceptions=False).exit_code == 0
    result = runner.invoke(
        main, ["ingest", "casme2", "--src", "data/demo/casme2", "--out", "data/original/casme2"], catch_exceptions=False
    )
    assert result.exit_code == 0
    report = json.loads((tmp_path / "data/original/casme2/ingest.json").read_text())
    assert report["kept"] == 8 - 0 and report["seed"] == 1  # apex only: one frame per good clip
    result = runner.invoke(main, ["validate", "data/original/casme2"], catch_exceptions=False)
    assert result.exit_code == 0
    assert json.loads((tmp_path / "metrics/quality/casme2.json").read_text())["success"]
    assert runner.invoke(main, ["export", "data/original/casme2", "browse"]).exit_code == 0
    assert len(list((tmp_path / "browse").rglob("*.jpg"))) == 8


def test_unknown_param_fails_before_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"demo": {"fer2013_rowz": 5}}))
    result = CliRunner().invoke(main, ["demo", "--out", "d"])
    assert result.exit_code == 2 and "fer2013_rowz" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_failing_suite_exits_non_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "demo": {"datasets": ["nhfi"], "nhfi_images": 20},
                "ingest": {},
                "validate": {"suites": {"nhfi": {"min_per_class": 1000}}},
            }
        )
    )
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--out", "demo"], catch_exceptions=False).exit_code == 0
    ingested = runner.invoke(main, ["ingest", "nhfi", "--src", "demo/nhfi", "--out", "nhfi"], catch_exceptions=False)
    assert ingested.exit_code == 0
    result = runner.invoke(main, ["validate", "nhfi"])
    assert result.exit_code == 1 and "validation failed" in result.output


def test_demographics_predict_accepts_a_ground_truth_directory(tmp_path):
    (tmp_path / "truth").mkdir()
    result = CliRunner().invoke(
        main,
        [
            "demographics-predict",
            str(tmp_path),
            "--model-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--truth",
            str(tmp_path / "truth"),
        ],
    )
    assert "is a directory" not in result.output  # fails later (no variant there), not on the option
    assert result.exit_code == 1 and "is not a variant" in result.output


def _deprecation(old: str) -> str:
    return f"fersynth: '{old}' is now '{RENAMED[old]}'; the old name goes in the next release"


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_an_old_command_name_runs_the_new_command_after_one_line_on_stderr(old):
    renamed, current = (CliRunner().invoke(main, [name, "--help"]) for name in (old, RENAMED[old]))
    assert renamed.exit_code == current.exit_code == 0
    assert renamed.stdout == current.stdout and f"Usage: main {RENAMED[old]} " in current.stdout  # the new one's help
    assert renamed.stderr.splitlines() == [_deprecation(old)] and current.stderr == ""


def test_an_old_name_does_the_new_commands_work_and_its_errors_name_the_new_command(tmp_path):
    (tmp_path / "truth").mkdir()
    args = [str(tmp_path), "--model-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--truth", f"{tmp_path}/truth"]
    renamed, current = (CliRunner().invoke(main, [name, *args]) for name in ("agr-predict", "demographics-predict"))
    assert renamed.exit_code == current.exit_code == 1  # the worker ran and refused the folder: no variant there
    assert current.stderr.startswith("fersynth demographics-predict: error: ") and "is not a variant" in current.stderr
    assert renamed.stderr.splitlines() == [_deprecation("agr-predict"), *current.stderr.splitlines()]


def test_old_command_names_are_hidden_from_the_help():
    listing = CliRunner().invoke(main, ["--help"]).stdout.split("Commands:\n", 1)[1]
    listed = {line.split()[0] for line in listing.splitlines() if line.startswith("  ") and line.split()}
    assert set(RENAMED.values()) <= listed and not set(RENAMED) & (listed | set(main.commands))
