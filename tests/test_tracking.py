import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from fersynth import tracking
from fersynth.cli import main
from tests.test_validate import GOOD, _variant

# A training stage in a child process: imports first, then (optionally) waits for a start file so that
# several children hit the database at the same moment, prints its run id and finishes or hangs.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a runner started with `&` passes SIGINT ignored
from pathlib import Path
import mlflow
from fersynth.tracking import start_run
stage, mode, start = sys.argv[1:]
print("ready", flush=True)
while start and not Path(start).exists():
    time.sleep(0.001)
with start_run(stage) as run:
    print(run.info.run_id, flush=True)
    while mode == "hang":
        time.sleep(0.05)
"""


def spawn(root, stage, mode="finish", start_file=""):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, stage, mode, str(start_file)],
        env={**os.environ, "DVC_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "ready\n", child.communicate()[1]
    return child


def client_of(root):
    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A project root whose mlflow.db is already migrated (the first migration takes ~5 s)."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_ROOT", str(root))
        tracking.ensure_experiment()
    return root


@pytest.fixture
def repo(store, tmp_path, monkeypatch):
    workspace = tmp_path / "exp-workspace"  # as under `dvc exp run --temp`
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("DVC_ROOT", str(store))
    monkeypatch.setenv("DVC_EXP_NAME", "mossy-oaks")
    return store


def test_runs_log_to_the_main_repo_with_tags(repo, tmp_path):
    variant = _variant(tmp_path / "v", GOOD[:4])
    with tracking.start_run("train", {"train": variant}, params={"lr": 0.01}) as run:
        mlflow.log_metric("val_accuracy", 0.5)
    assert tracking.tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    assert (repo / "mlflow.db").exists() and not (tmp_path / "exp-workspace" / "mlflow.db").exists()
    client = client_of(repo)
    logged = client.get_run(run.info.run_id)
    assert logged.info.run_name == "mossy-oaks" and logged.info.status == "FINISHED"
    assert logged.data.tags["fersynth.stage"] == "train"
    assert logged.data.tags["fersynth.host"] == socket.gethostname()
    assert logged.data.tags["fersynth.pid"] == str(os.getpid())
    assert logged.data.tags["dvc.exp_name"] == "mossy-oaks"
    assert logged.data.tags["fersynth.input.train.sha256"] == tracking.variant_hash(variant)
    assert logged.data.params == {"lr": "0.01"}
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.artifact_location == (repo / "mlartifacts" / "fersynth").as_uri()  # any MLflow client reads it
    # the MLflow 3 UI opens a "Machine learning" experiment on its runs, not on the GenAI overview
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert experiment.tags[tracking.ARTIFACT_ROOT_TAG] == (repo / "mlartifacts").as_uri()


def test_mlflow_tracking_uri_overrides_the_repository_database(repo, tmp_path, monkeypatch):
    elsewhere = tmp_path / "team-store"
    shutil.copytree(repo, elsewhere)  # an already migrated database of its own
    uri = f"sqlite:///{elsewhere / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.tracking_uri() == uri
    with tracking.start_run("train", params={"lr": 0.02}) as run:
        mlflow.log_metric("val_accuracy", 0.25)
    logged = client_of(elsewhere).get_run(run.info.run_id)
    assert logged.data.params == {"lr": "0.02"} and logged.data.metrics == {"val_accuracy": 0.25}
    assert logged.data.tags["dvc.exp_name"] == "mossy-oaks"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client_of(repo).get_run(run.info.run_id)
    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def test_the_default_uri_does_not_leak_into_the_environment(repo, tmp_path, monkeypatch):
    # MLflow copies the URI it is given into MLFLOW_TRACKING_URI: left there, it would pin every later call
    # and child process (DVC stages) to this repository's database whatever their DVC_ROOT
    tracking.ensure_experiment()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    other = tmp_path / "other"
    shutil.copytree(repo, other)
    monkeypatch.setenv("DVC_ROOT", str(other))
    assert tracking.tracking_uri() == f"sqlite:///{other / 'mlflow.db'}"


def test_a_dataset_that_a_parallel_run_inserted_first_is_logged_again(repo, tmp_path, monkeypatch):
    # PostgreSQL behind a server, two queued runs on one variant: both look the dataset up, both insert it
    variant = _variant(tmp_path / "v", GOOD[:4])
    calls = []
    log_input = mlflow.log_input

    def racing(dataset, context=None):
        calls.append(dataset.digest)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException(
                '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'
            )
        return log_input(dataset, context=context)

    monkeypatch.setattr(mlflow, "log_input", racing)
    with tracking.start_run("train", {"train": variant}) as run:
        pass
    assert len(calls) == 2
    assert len(client_of(repo).get_run(run.info.run_id).inputs.dataset_inputs) == 1
    calls.clear()

    def broken(dataset, context=None):
        calls.append(dataset.digest)
        raise mlflow.exceptions.MlflowException("another error")

    monkeypatch.setattr(mlflow, "log_input", broken)  # any other error is not retried
    with pytest.raises(mlflow.exceptions.MlflowException, match="another"), tracking.start_run("t", {"t": variant}):
        pass
    assert len(calls) == 1


def test_a_tracking_server_decides_where_artifacts_go():
    assert tracking.is_tracking_server("http://127.0.0.1:5000") and tracking.is_tracking_server("https://mlflow.lab")
    assert not tracking.is_tracking_server("sqlite:////tmp/mlflow.db")
    # the server proxies them to its --artifacts-destination (mlflow-artifacts:/<experiment id>)
    assert tracking.experiment_artifact_location("http://127.0.0.1:5000", "fersynth") is None
    assert (
        tracking.experiment_artifact_location("sqlite:////r/mlflow.db", "fersynth") == "file:///r/mlartifacts/fersynth"
    )
    # any other store decides too: only the repository's own kind of database keeps them in the repository
    for uri in ("postgresql://u@127.0.0.1/mlflow", "mysql://u@db/mlflow", "file:///tmp/mlruns"):
        assert tracking.experiment_artifact_location(uri, "fersynth") is None, uri


@pytest.mark.parametrize("answer", ["refused", "silent"])
def test_a_dead_tracking_server_is_a_one_line_error_within_seconds(repo, monkeypatch, answer):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if answer == "silent":
            listener.listen()  # connections are accepted by the kernel, and never answered
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        started = time.monotonic()
        with pytest.raises(tracking.TrackingServerUnreachable) as raised:
            with tracking.start_run("train"):
                pass
        assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "\n" not in message and uri in message
    assert "fersynth mlflow-server start" in message and "unset MLFLOW_TRACKING_URI" in message


# A model from code that any MLflow client loads: the move test logs and registers one.
ECHO_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
"""


def test_the_tracking_database_and_its_artifacts_move_with_the_repository(store, tmp_path, monkeypatch):
    repo = tmp_path / "origin"
    shutil.copytree(store, repo)  # a project of its own, with an already migrated database
    monkeypatch.setenv("DVC_ROOT", str(repo))
    variant = _variant(tmp_path / "v", GOOD[:4])
    (tmp_path / "echo.py").write_text(ECHO_MODEL)
    with tracking.start_run("train", {"train": variant}) as run:
        (tmp_path / "note.txt").write_text("kept")
        mlflow.log_artifact(str(tmp_path / "note.txt"), "files")
        model = mlflow.pyfunc.log_model(name="model", python_model=str(tmp_path / "echo.py"), pip_requirements=[])
    mlflow.register_model(model.model_uri, "echo")
    assert (repo / "mlartifacts" / "fersynth" / run.info.run_id / "artifacts" / "files" / "note.txt").is_file()
    moved = tmp_path / "elsewhere" / "a repo_with spaces"  # `_`: a SQL LIKE wildcard; a space: %20 in a URI
    shutil.copytree(repo, moved)
    shutil.rmtree(repo)  # the old place is gone: nothing may still point there
    client = client_of(moved)
    with pytest.raises(mlflow.exceptions.MlflowException, match="Failed to download"):  # still names the old place
        client.download_artifacts(run.info.run_id, "files", str(tmp_path))
    monkeypatch.setenv("DVC_ROOT", str(moved))
    tracking.ensure_experiment()  # what every fersynth stage does first: relocates
    # the old place survives only as provenance (where the run and model were made), never as a location
    provenance = {("tags", "fersynth.dvc_root"), ("tags", "mlflow.source.name"), ("logged_model_tags", "tag_value")}
    assert _values_naming(moved / "mlflow.db", str(repo)) <= provenance
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith((moved / "mlartifacts").as_uri())
    relocated = CliRunner().invoke(main, ["mlflow-relocate"])  # in place: nothing rewritten again
    assert relocated.exit_code == 0 and relocated.output == "0 artifact location(s) rewritten\n", relocated.output
    # any MLflow client now reads artifacts and models, from any working directory, without fersynth
    monkeypatch.delenv("DVC_ROOT")
    (tmp_path / "got").mkdir()
    monkeypatch.chdir(tmp_path / "got")
    fetched = client.download_artifacts(run.info.run_id, "files", str(tmp_path / "got"))
    assert (Path(fetched) / "note.txt").read_text() == "kept"
    mlflow.set_tracking_uri(f"sqlite:///{moved / 'mlflow.db'}")
    assert mlflow.pyfunc.load_model("models:/echo/1").predict(["same"]) == ["same"]


def test_locations_written_by_the_old_fersynth_repo_scheme_become_file_uris(store, tmp_path, monkeypatch):
    repo = tmp_path / "legacy"
    shutil.copytree(store, repo)
    monkeypatch.setenv("DVC_ROOT", str(repo))
    with tracking.start_run("train") as run:
        (tmp_path / "note.txt").write_text("old")
        mlflow.log_artifact(str(tmp_path / "note.txt"))
    here = (repo / "mlartifacts").as_uri()
    with sqlite3.connect(repo / "mlflow.db") as db:  # as fersynth wrote them before plain file:// locations
        db.execute("update runs set artifact_uri = replace(artifact_uri, ?, 'fersynth-repo:/mlartifacts')", (here,))
        db.execute(
            "update experiments set artifact_location = 'fersynth-repo:/mlartifacts/fersynth' where name = 'fersynth'"
        )
        db.execute("delete from experiment_tags where key = ?", (tracking.ARTIFACT_ROOT_TAG,))
        db.execute("delete from experiment_tags where key = ?", (tracking.EXPERIMENT_KIND_TAG,))
        (runs,) = db.execute("select count(*) from runs where artifact_uri like 'fersynth-repo:%'").fetchone()
    assert runs >= 1 and tracking.relocate_store() == runs + 1  # and the experiment's own location
    client = client_of(repo)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    assert experiment.artifact_location == f"{here}/fersynth" and experiment.tags[tracking.ARTIFACT_ROOT_TAG] == here
    assert client.get_run(run.info.run_id).info.artifact_uri == f"{here}/fersynth/{run.info.run_id}/artifacts"
    (tmp_path / "got").mkdir()
    assert Path(client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "got"))).read_text() == "old"
    tracking.ensure_experiment()  # an experiment made before the kind tag gets it
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_relocating_needs_a_sqlite_database(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    result = CliRunner().invoke(main, ["mlflow-relocate"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.startswith("fersynth mlflow-relocate: error: no sqlite tracking database at sqlite:///")
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(tracking.FersynthError, match="no sqlite tracking database"):
        tracking.relocate_store()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(tracking.FersynthError, match="http://127.0.0.1:5000"):
        tracking.relocate_store()
    assert tracking.relocate_artifacts(tmp_path / "missing.db") == 0


def _values_naming(database, text: str) -> set[tuple[str, str]]:
    """(table, column or tag key) of every value in ``database`` that contains ``text``."""
    found = set()
    with sqlite3.connect(database) as db:
        for (table,) in db.execute("select name from sqlite_master where type = 'table'").fetchall():
            columns = [row[1] for row in db.execute(f"pragma table_info({table})")]
            for row in db.execute(f"select * from {table}"):
                values = dict(zip(columns, row, strict=True))
                for column, value in values.items():
                    if isinstance(value, str) and text in value:
                        found.add((table, values.get("key", column) if table == "tags" else column))
    return found


def test_four_processes_starting_at_once_on_a_new_database_all_finish(tmp_path):
    # `dvc queue start -j 4` on a fresh clone: unlocked, MLflow's migrations race and break the database
    start = tmp_path / "start"
    children = [spawn(tmp_path, "race", start_file=start) for _ in range(4)]
    start.touch()
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 4, "\n".join(errors)
    client = client_of(tmp_path)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.status for run in runs] == ["FINISHED"] * 4
    assert len({run.data.tags["fersynth.pid"] for run in runs}) == 4


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_run_stopped_by_sigterm_or_ctrl_c_ends_killed_and_its_process_fails(store, signum):
    child = spawn(store, f"stopped-{signum.name}", mode="hang")
    run_id = child.stdout.readline().strip()
    child.send_signal(signum)
    _, error = child.communicate(timeout=60)
    assert child.returncode != 0, error
    assert client_of(store).get_run(run_id).info.status == "KILLED", error


def test_the_next_start_marks_a_run_of_a_dead_process_killed_and_leaves_live_ones(store, monkeypatch, caplog):
    stage = "sigkilled"
    child = spawn(store, stage, mode="hang")
    run_id = child.stdout.readline().strip()
    child.kill()
    child.wait()  # reaped: a zombie's pid still answers kill(pid, 0)
    client = client_of(store)
    assert client.get_run(run_id).info.status == "RUNNING"  # SIGKILL gives the child no chance to end it
    experiment_id = client.get_run(run_id).info.experiment_id
    here = {"fersynth.host": socket.gethostname()}
    untouched = [
        client.create_run(experiment_id, tags={"fersynth.stage": stage, **here, "fersynth.pid": str(os.getpid())}),
        client.create_run(
            experiment_id, tags={"fersynth.stage": stage, "fersynth.host": "elsewhere", "fersynth.pid": str(child.pid)}
        ),
        client.create_run(experiment_id, tags={"fersynth.stage": "another", **here, "fersynth.pid": str(child.pid)}),
    ]
    monkeypatch.setenv("DVC_ROOT", str(store))
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with tracking.start_run(stage):
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, before)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert client.get_run(run_id).info.status == "KILLED"
    assert [client.get_run(run.info.run_id).info.status for run in untouched] == ["RUNNING"] * 3
    assert f"marked 1 run(s) of stage {stage} KILLED" in caplog.text
