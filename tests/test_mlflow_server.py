"""The local tracking server (fersynth.mlflow_server): PostgreSQL where it can be had, else sqlite behind the
same server; two queued DVC experiments run in parallel (`dvc queue start -j 2`) and log their runs, params,
metrics and models to it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from fersynth import mlflow_server, tracking
from fersynth.ingest import ingest
from fersynth.paths import MlflowServerLayout, original_variant

EXPERIMENTS = {"server-a": {"learning_rate": 0.001, "seed": 0}, "server-b": {"learning_rate": 0.003, "seed": 1}}
TINY = {
    "variants": [str(original_variant("fer2013"))],
    "width": 0.25,
    "input": {"size": 32, "channels": 1},
    "epochs": 1,
    "batch_size": 32,
    "learning_rate": 0.001,
    "seed": 0,
    "trials": 1,
}
DVC_YAML = {
    "stages": {
        "train": {
            "cmd": "fersynth train tiny",
            "deps": [str(original_variant("fer2013"))],
            "params": ["train.tiny"],
            "outs": ["models/tiny"],
            "metrics": [{"metrics/train/tiny.json": {"cache": False}}],
            "plots": [{"metrics/train/history/tiny.csv": {"cache": False}}],
        }
    }
}


def _run(args, cwd, env) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def served():
    """A server on a free port, PostgreSQL-backed where PostgreSQL can be had (installed with apt-get when
    missing and root), else on sqlite, which the test says. Its folder is outside pytest's private tmp
    tree: PostgreSQL runs as an unprivileged user, who must reach it."""
    root = Path(tempfile.mkdtemp(prefix="fersynth-mlflow-server-"))
    root.chmod(0o755)
    try:
        with mlflow_server.serve(root, port=0) as running:
            if running.backend != "postgresql":
                warnings.warn(f"PostgreSQL unavailable ({running.note}): the server runs on sqlite", stacklevel=1)
            yield running, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def project(tmp_path, tiny_demo, served, monkeypatch):
    """A git + DVC project whose one stage trains a tiny classifier (`fersynth train tiny`), with the
    demo's FER2013 variant tracked by git (queued runs only see what the commit holds)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ)
    env.pop("DVC_ROOT", None)
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "MLFLOW_TRACKING_URI": served[0].uri,
        "OMP_NUM_THREADS": "1",  # two trainings at once on two cores
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    monkeypatch.setenv("DVC_ROOT", str(repo))
    ingest("fer2013", tiny_demo / "fer2013", repo / original_variant("fer2013"))
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"tiny": TINY}}, sort_keys=False))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / ".gitignore").write_text(".cache/\n")
    _run(["git", "init", "-q", "-b", "main"], repo, env)
    _run(["dvc", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny project"], repo, env)
    return repo, env


def _wait_for_queue(repo: Path, env, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _run(["dvc", "queue", "status"], repo, env)
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(2)
    failed = [line.split()[0] for line in status.splitlines() if "Failed" in line]
    logs = [_run(["dvc", "queue", "logs", task], repo, env) for task in failed]
    assert not failed and "Success" in status, status + "\n".join(logs)[-3000:]


def _experiment_metrics(repo: Path, env) -> dict[str, dict]:
    """name -> metrics/train/tiny.json of each experiment, from `dvc exp show --json`."""
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env))
    found = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                metrics = revision["data"]["metrics"]["metrics/train/tiny.json"]["data"]
                found[revision["name"]] = metrics
    return found


@pytest.mark.slow
def test_two_queued_experiments_log_runs_params_metrics_and_models_to_the_server(served, project, tmp_path):
    server, server_root = served
    repo, env = project
    for name, values in EXPERIMENTS.items():
        settings = [f"train.tiny.{key}={value}" for key, value in values.items()]
        _run(["dvc", "exp", "run", "--queue", "-n", name, *[a for s in settings for a in ("-S", s)]], repo, env)
    _run(["dvc", "queue", "start", "-j", "2"], repo, env)
    _wait_for_queue(repo, env)
    shown = _experiment_metrics(repo, env)
    assert sorted(shown) == sorted(EXPERIMENTS)

    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("fersynth")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server stores them
    runs = {run.data.tags["dvc.exp_name"]: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(EXPERIMENTS)
    for name, values in EXPERIMENTS.items():
        run = runs[name]
        assert run.info.run_name == f"{name}:tiny" and run.info.status == "FINISHED"
        assert run.data.tags["fersynth.stage"] == "train"
        assert {key: run.data.params[key] for key in values} == {key: str(value) for key, value in values.items()}
        assert run.data.params["epochs"] == "1" and run.data.params["input.size"] == "32"
        assert run.data.metrics["test_accuracy"] == pytest.approx(shown[name]["test_accuracy"], abs=1e-4)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
        models = client.search_logged_models(
            [experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        assert [model.name for model in models] == ["model"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"confusion_test.json", "confusion_test.png"} <= artifacts
    # the best trial of each experiment is registered: one version per queued experiment
    versions = client.search_model_versions("name = 'fersynth-tiny'")
    assert sorted(v.run_id for v in versions) == sorted(run.info.run_id for run in runs.values())
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()  # nothing went local

    # a registered version loads back from the server, which keeps its weights in its own folder, and predicts
    registered = client.get_logged_model(versions[0].source.removeprefix("models:/"))  # the run's logged model
    assert registered.source_run_id == versions[0].run_id
    local = mlflow.artifacts.download_artifacts(
        registered.artifact_location, dst_path=str(tmp_path / "got"), tracking_uri=server.uri
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": the signature validates input
        probabilities = mlflow.pyfunc.load_model(local).predict(np.zeros((2, 1, 32, 32), dtype=np.uint8))
    assert np.asarray(probabilities).shape == (2, 7)
    assert len(list(MlflowServerLayout(server_root).artifacts.rglob("model.safetensors"))) == 2


@pytest.mark.slow
def test_without_postgresql_the_same_server_runs_on_sqlite_and_says_so(tmp_path, monkeypatch, caplog):
    def cannot_install(log_path):
        raise mlflow_server.PostgresUnavailable("its programs are not installed (no apt-get here)")

    monkeypatch.setattr(mlflow_server, "postgres_bindir", lambda: None)
    monkeypatch.setattr(mlflow_server, "install_postgres", cannot_install)
    root = tmp_path / "server"
    server = mlflow_server.start(root, port=0)
    try:
        assert server.backend == "sqlite" and "no apt-get here" in server.note
        assert "PostgreSQL unavailable (its programs are not installed (no apt-get here))" in caplog.text
        with pytest.raises(mlflow_server.ServerError, match="already running"):
            mlflow_server.start(root, port=0)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.setenv("DVC_ROOT", str(tmp_path))
        with tracking.start_run("train", params={"lr": 0.5}) as run:
            mlflow.log_metric("val_accuracy", 0.75)
            mlflow.log_dict({"kept": True}, "note.json")
        logged = mlflow.MlflowClient(server.uri).get_run(run.info.run_id)
        assert logged.data.params == {"lr": "0.5"} and logged.data.metrics == {"val_accuracy": 0.75}
        assert json.loads((next(MlflowServerLayout(root).artifacts.rglob("note.json"))).read_text()) == {"kept": True}
        assert (root / "mlflow.db").is_file() and not (tmp_path / "mlflow.db").exists()
    finally:
        assert mlflow_server.stop(root)
    assert not MlflowServerLayout(root).state.exists() and not mlflow_server.stop(root)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.uri}/health", timeout=2)


@pytest.mark.skipif(os.geteuid() != 0 or mlflow_server.postgres_bindir() is None, reason="as root, with PostgreSQL")
def test_postgresql_refuses_a_folder_its_user_cannot_reach(tmp_path):
    # pytest's tmp tree is private to root: the unprivileged user PostgreSQL runs as cannot enter it
    layout = MlflowServerLayout(tmp_path / "server")
    with pytest.raises(mlflow_server.PostgresUnavailable, match="cannot reach"):
        mlflow_server.init_postgres(layout, mlflow_server.postgres_bindir(), mlflow_server.service_user())
    assert not layout.postgres_data.exists()
