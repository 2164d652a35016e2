import mlflow
import pytest

from fersynth import tracking
from tests.test_validate import GOOD, _variant


@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    workspace = tmp_path / "exp-workspace"  # as under `dvc exp run --temp`
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("DVC_EXP_NAME", "mossy-oaks")
    return root


def test_runs_log_to_the_main_repo_with_tags(repo, tmp_path):
    variant = _variant(tmp_path / "v", GOOD[:4])
    with tracking.start_run("train", {"train": variant}, params={"lr": 0.01}) as run:
        mlflow.log_metric("val_accuracy", 0.5)
    assert tracking.tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    assert (repo / "mlflow.db").exists() and not (tmp_path / "exp-workspace" / "mlflow.db").exists()
    client = mlflow.tracking.MlflowClient(tracking.tracking_uri())
    logged = client.get_run(run.info.run_id)
    assert logged.info.run_name == "mossy-oaks"
    assert logged.data.tags["fersynth.stage"] == "train"
    assert logged.data.tags["dvc.exp_name"] == "mossy-oaks"
    assert logged.data.tags["fersynth.input.train.sha256"] == tracking.variant_hash(variant)
    assert logged.data.params == {"lr": "0.01"}
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.artifact_location.startswith((repo / "mlartifacts").as_uri())
