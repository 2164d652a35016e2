from pathlib import Path

import pytest

from fersynth.paths import (
    CheckpointLayout,
    EvaluateLayout,
    array_cache_dir,
    in_workspace,
    mlflow_artifacts_dir,
    trial_dirs,
    trial_name,
    trial_seed,
)


def _checkpoint(directory: Path) -> Path:
    directory.mkdir(parents=True)
    CheckpointLayout(directory).weights.write_bytes(b"")
    return directory


def test_trial_directories_are_found_in_seed_order(tmp_path):
    for seed in (10, 2, 3):
        _checkpoint(tmp_path / "exp" / trial_name(seed))
    (tmp_path / "exp" / "seed-notes").mkdir()  # not a trial
    assert [trial_seed(d) for d in trial_dirs(tmp_path / "exp")] == [2, 3, 10]  # 10 after 3, not after 1
    assert trial_dirs(_checkpoint(tmp_path / "single")) == [tmp_path / "single"]
    assert trial_seed(tmp_path / "single") is None and trial_name(7) == "seed-7"
    with pytest.raises(FileNotFoundError, match="no trained model"):
        trial_dirs(tmp_path / "exp" / "seed-notes")


def test_evaluate_outputs_and_the_array_cache_have_one_layout(tmp_path, monkeypatch):
    layout = EvaluateLayout(tmp_path / "out")
    assert layout.predictions("m", "t") == tmp_path / "out" / "predictions" / "m" / "t.csv"
    assert layout.per_class("m", "t") == tmp_path / "out" / "per_class" / "m" / "t.json"
    assert layout.confusion_png("m", "t") == tmp_path / "out" / "confusion_figures" / "m" / "t.png"
    assert not layout.confusion_png("m", "t").is_relative_to(layout.confusion_dir)  # dvc plots draws the CSVs only
    assert layout.scores("m") == tmp_path / "out" / "scores" / "m.json"
    assert EvaluateLayout.under(tmp_path) == EvaluateLayout(tmp_path / "evaluate")
    assert EvaluateLayout().root == Path("metrics/evaluate")  # dvc.yaml's evaluate outs
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert array_cache_dir() == tmp_path / ".cache" / "arrays"


def test_the_workspace_excludes_dvc_temp_experiments_and_other_places(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    monkeypatch.setenv("DVC_ROOT", str(repo))
    assert in_workspace(repo / "models" / "fer2013") and in_workspace(repo)
    # `dvc exp run --temp` / queued runs: DVC_ROOT is the main repository, the outputs a copy under .dvc/tmp/exps
    monkeypatch.chdir(tmp_path)
    assert not in_workspace(repo / ".dvc" / "tmp" / "exps" / "run" / "abc" / "models" / "fer2013")
    assert not in_workspace(Path("repo-side-run/models/fer2013")) and not in_workspace(repo / ".." / "elsewhere")
    assert mlflow_artifacts_dir() == repo / "mlartifacts" and mlflow_artifacts_dir(tmp_path) == tmp_path / "mlartifacts"
