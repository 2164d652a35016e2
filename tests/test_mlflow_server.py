"""The local tracking server (fersynth.ops.mlflow_server): PostgreSQL where it can be had, else sqlite behind the
same server; two queued DVC experiments run in parallel (`dvc queue start -j 2`) and log their runs, params,
metrics and models to it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
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
from click.testing import CliRunner
from filelock import FileLock

from fersynth import tracking
from fersynth.cli import main
from fersynth.ingest import ingest
from fersynth.ops import mlflow_server, postgres
from fersynth.paths import MlflowServerLayout, original_variant
from tests.conftest import run_ok, wait_for_dvc_queue

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


@pytest.fixture(scope="module")
def served():
    """A server on a free port, PostgreSQL-backed where PostgreSQL's programs are installed (never installed
    here: that is `--install-postgres`, `make mlflow-server` or .ci/run), else on sqlite, which the test says.
    Its folder is outside pytest's private tmp tree: PostgreSQL runs as an unprivileged user, who must reach it."""
    backend = "postgresql" if postgres.postgres_bindir() is not None else "sqlite"
    if backend == "sqlite":
        warnings.warn("PostgreSQL's programs are not installed: the server runs on sqlite", stacklevel=1)
    root = Path(tempfile.mkdtemp(prefix="fersynth-mlflow-server-"))
    root.chmod(0o755)
    try:
        with mlflow_server.serve(root, port=0, backend=backend) as running:
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
    run_ok(["git", "init", "-q", "-b", "main"], repo, env)
    run_ok(["dvc", "init", "-q"], repo, env)
    run_ok(["git", "add", "-A"], repo, env)
    run_ok(["git", "commit", "-qm", "tiny project"], repo, env)
    return repo, env


def _experiment_metrics(repo: Path, env) -> dict[str, dict]:
    """name -> metrics/train/tiny.json of each experiment, from `dvc exp show --json`."""
    shown = json.loads(run_ok(["dvc", "exp", "show", "--json"], repo, env))
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
        run_ok(["dvc", "exp", "run", "--queue", "-n", name, *[a for s in settings for a in ("-S", s)]], repo, env)
    run_ok(["dvc", "queue", "start", "-j", "2"], repo, env)
    status = wait_for_dvc_queue(repo, env, timeout=600, poll=2)
    assert "Success" in status, status
    shown = _experiment_metrics(repo, env)
    assert sorted(shown) == sorted(EXPERIMENTS)

    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("fersynth")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server stores them
    logged = client.search_runs([experiment.experiment_id])
    runs = {run.data.tags["dvc.exp_name"]: run for run in logged if "fersynth.trial_seed" in run.data.tags}
    parents = {run.data.tags["dvc.exp_name"]: run for run in logged if "fersynth.trial_seed" not in run.data.tags}
    assert sorted(runs) == sorted(parents) == sorted(EXPERIMENTS) and len(logged) == 4
    first, second = (run.info for run in runs.values())
    # both ran at once (the parallel path, two clients of the server), not one after the other
    assert first.start_time < second.end_time and second.start_time < first.end_time, (first, second)
    for name, values in EXPERIMENTS.items():
        run = runs[name]
        assert run.info.run_name == f"{name}:tiny/seed-{values['seed']}" and run.info.status == "FINISHED"
        # each experiment's trial nests under its parent run, which carries the summary over its seeds
        parent = parents[name]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and parent.info.run_name == f"{name}:tiny"
        assert parent.data.metrics["test_accuracy"] == pytest.approx(shown[name]["test_accuracy"], abs=1e-4)
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
    # queued experiments ran in DVC temp workspaces: none is the workspace's model, so none is @champion
    assert client.get_registered_model("fersynth-tiny").aliases == {}
    assert {v.tags["dvc.exp_name"] for v in versions} == set(EXPERIMENTS)
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()  # nothing went local

    # a registered version loads back from the server, which keeps its weights in its own folder, and predicts
    registered = client.get_logged_model(versions[0].source.removeprefix("models:/"))  # the run's logged model
    assert registered.source_run_id == versions[0].run_id
    local = mlflow.artifacts.download_artifacts(
        registered.artifact_location, dst_path=str(tmp_path / "got"), tracking_uri=server.uri
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": the model checks its input
        probabilities = mlflow.pyfunc.load_model(local).predict(np.zeros((2, 1, 32, 32), dtype=np.uint8))
    assert np.asarray(probabilities).shape == (2, 7)
    assert len(list(MlflowServerLayout(server_root).artifacts.rglob("model.safetensors"))) == 2


@pytest.mark.slow
def test_without_postgresql_the_same_server_runs_on_sqlite_and_says_so(tmp_path, monkeypatch, caplog):
    def no_install(log_path):
        raise AssertionError("installed PostgreSQL without --install-postgres")

    monkeypatch.setattr(postgres, "postgres_bindir", lambda: None)
    monkeypatch.setattr(postgres, "install_postgres", no_install)
    root = tmp_path / "server"
    server = mlflow_server.start(root, port=0)
    try:
        assert server.backend == "sqlite" and "its programs are not installed" in server.note
        assert "PostgreSQL unavailable (its programs are not installed" in caplog.text
        with pytest.raises(mlflow_server.ServerError, match=f"already running.*stop --dir {root}"):
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
        # `mlflow server` killed on its own: its uvicorn workers are still its group, which stop ends
        os.kill(server.pid, signal.SIGKILL)
    finally:
        assert mlflow_server.stop(root)
    assert not _living(server.pid)
    assert not MlflowServerLayout(root).state.exists() and not mlflow_server.stop(root)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.uri}/health", timeout=2)


def _reaches(user: str, folder: Path) -> bool:
    return subprocess.run(["test", "-x", str(folder)], **postgres.as_user(user)).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or postgres.postgres_bindir() is None, reason="as root, with PostgreSQL")
def test_postgresql_refuses_a_folder_its_user_cannot_reach(tmp_path):
    user = postgres.service_user()
    if _reaches(user, tmp_path):
        pytest.skip(f"{user} can enter {tmp_path}: nothing to refuse")
    layout = MlflowServerLayout(tmp_path / "server")
    with pytest.raises(mlflow_server.ServerError, match="cannot reach"):
        postgres.init_postgres(layout, postgres.postgres_bindir(), user)
    assert not layout.postgres_data.exists()


def test_stop_when_nothing_runs(tmp_path):
    assert not mlflow_server.stop(tmp_path / "never-started")
    assert not mlflow_server.stop(tmp_path)
    assert not (tmp_path / "never-started").exists()


def _fake_server_group(root: Path) -> subprocess.Popen:
    """A process group like the server's: a leader and a worker, in the server's folder."""
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], cwd=root, start_new_session=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(_living(leader.pid)) < 2:
        time.sleep(0.02)
    return leader


def _living(pgid: int) -> list[int]:
    return [pid for pid, state in mlflow_server._group_members(pgid).items() if state != "Z"]


def _write_state(root: Path, pid: int) -> None:
    server = mlflow_server.Server("http://127.0.0.1:9", "sqlite", "sqlite:///x", pid)
    (root / "server.json").write_text(json.dumps(dataclasses.asdict(server)))


def test_a_killed_leader_leaves_its_group_which_start_refuses_and_stop_ends(tmp_path):
    root = tmp_path.resolve()
    leader = _fake_server_group(root)
    _write_state(root, leader.pid)
    leader.kill()
    leader.wait()
    assert _living(leader.pid)  # its worker still runs
    with pytest.raises(mlflow_server.ServerError, match=f"already running at .* --dir {root}"):
        mlflow_server.start(root, port=0, backend="sqlite")
    assert mlflow_server.stop(root)
    assert not _living(leader.pid) and not (root / "server.json").exists()


def test_start_cleans_the_state_of_a_server_group_killed_whole(tmp_path, monkeypatch):
    root = tmp_path.resolve()
    leader = _fake_server_group(root)
    _write_state(root, leader.pid)
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()

    def started(*args):
        assert not (root / "server.json").exists()  # the stale state is gone before anything starts
        raise KeyboardInterrupt

    monkeypatch.setattr(mlflow_server, "start_mlflow", started)
    with pytest.raises(KeyboardInterrupt):
        mlflow_server.start(root, port=0, backend="sqlite")
    assert not (root / "server.json").exists()


def test_a_start_beside_another_start_or_stop_is_refused(tmp_path):
    with FileLock(MlflowServerLayout(tmp_path).lock):
        with pytest.raises(mlflow_server.ServerError, match="another `fersynth mlflow-server start` or `stop`"):
            mlflow_server.start(tmp_path, port=0, backend="sqlite")
    assert not (tmp_path / "server.json").exists()


def test_auto_falls_back_to_sqlite_only_where_postgresql_is_missing(tmp_path, monkeypatch):
    def broken(layout, install):
        raise mlflow_server.ServerError("pg_ctl start failed: interrupted")

    monkeypatch.setattr(mlflow_server, "prepare_postgres", broken)
    with pytest.raises(mlflow_server.ServerError, match="pg_ctl start failed"):
        mlflow_server.start(tmp_path, port=0)
    assert not (tmp_path / "server.json").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_truncated_state_is_a_one_line_error(tmp_path):
    (tmp_path / "server.json").write_text('{"uri": "http://127.0')
    for act in (mlflow_server.stop, lambda root: mlflow_server.start(root, port=0, backend="sqlite")):
        with pytest.raises(mlflow_server.ServerError, match="is not a server's state.*delete it"):
            act(tmp_path)


def test_the_password_file_is_private_and_the_folders_reachable_whatever_the_umask(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(postgres.Postgres, "run", lambda self, tool, *args: ran.append(tool) or _done())
    layout = MlflowServerLayout(tmp_path / "a" / "server")
    old = os.umask(0o077)
    try:
        postgres.make_dirs(layout.root)
        postgres.init_postgres(layout, Path("/nonexistent"), None)
    finally:
        os.umask(old)
    assert ran == ["initdb"]
    assert layout.postgres_password.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"\*:\*:\*:mlflow:\S+\n", layout.postgres_password.read_text())
    assert not layout.postgres_initdb_password.exists()
    for folder in (tmp_path / "a", layout.root, layout.postgres_dir, layout.postgres_socket_dir):
        assert folder.stat().st_mode & 0o777 == 0o755, folder


def _done() -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], 0, "", "")


def test_a_bad_dir_is_a_one_line_cli_error():
    result = CliRunner().invoke(main, ["mlflow-server", "start", "--dir", "/proc/nope", "--backend", "sqlite"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fersynth mlflow-server: error: /proc/nope:"), result.output


def test_postgres_stop_falls_back_to_sigint_where_pg_ctl_refuses(tmp_path, monkeypatch, caplog):
    # like a real postmaster, it ends on SIGINT whatever it inherited (a job started in the background by a
    # non-interactive shell, e.g. `make test &`, inherits SIGINT ignored)
    ends_on_sigint = (
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); print('up', flush=True); time.sleep(60)"
    )
    postmaster = subprocess.Popen([sys.executable, "-c", ends_on_sigint], stdout=subprocess.PIPE, text=True)
    assert postmaster.stdout.readline() == "up\n"  # its handler is in place before the stop
    (tmp_path / "postmaster.pid").write_text(f"{postmaster.pid}\n{tmp_path}\n")
    refused = subprocess.CompletedProcess([], 1, "", "pg_ctl: cannot be run as root\nPlease log in as the owner\n")
    monkeypatch.setattr(postgres.Postgres, "run", lambda self, tool, *args: refused)
    monkeypatch.setattr(postgres.Postgres, "postmaster_pid", lambda self: None if postmaster.poll() else postmaster.pid)
    try:
        postgres.Postgres("/nonexistent", str(tmp_path), None, 0).stop()
        assert postmaster.wait(timeout=5) != 0  # ended by SIGINT
    finally:
        postmaster.kill()
    assert "pg_ctl stop failed (pg_ctl: cannot be run as root Please log in as the owner)" in caplog.text
