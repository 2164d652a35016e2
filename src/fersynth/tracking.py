"""MLflow helper used by every training stage.

Tracking URI is ``sqlite:///<repo root>/mlflow.db`` with the root from ``DVC_ROOT``, so runs made in
``dvc exp run --temp`` / ``--queue`` workspaces land in the main repo's store; the run is named after
``DVC_EXP_NAME`` and tagged with stage, git commit, host, pid and the hashes of its input variants.

Safe with parallel workers (``dvc queue start -j N``): the database and the experiment are created under a
file lock, and a run whose process dies does not stay RUNNING (see ``start_run``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from fersynth.atomic import pid_alive
from fersynth.log import get_logger
from fersynth.paths import VariantLayout, mlflow_artifacts_dir, mlflow_artifacts_uri, mlflow_db_path, project_root

DEFAULT_EXPERIMENT = "fersynth"
# a first migration takes ~5 s; a holder stuck this long is a bug worth an error naming the lock file
LOCK_TIMEOUT_S = 300

logger = get_logger(__name__)


class RunTerminated(SystemExit):
    """Raised by SIGTERM inside ``start_run``; uncaught, it exits the process with status 128 + SIGTERM."""


def tracking_uri() -> str:
    return f"sqlite:///{mlflow_db_path()}"


def git_commit(root: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root or project_root(), capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def variant_hash(variant_dir: Path) -> str:
    """sha256 of a variant's manifest: changes whenever any image, label or split changes."""
    return hashlib.sha256(VariantLayout(Path(variant_dir)).manifest.read_bytes()).hexdigest()


def run_tags(stage: str, inputs: Mapping[str, Path]) -> dict[str, str]:
    tags = {
        "fersynth.stage": stage,
        "fersynth.dvc_root": str(project_root()),
        "fersynth.host": socket.gethostname(),
        "fersynth.pid": str(os.getpid()),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    for name, path in inputs.items():
        tags[f"fersynth.input.{name}.sha256"] = variant_hash(path)
    return tags


def log_inputs(inputs: Mapping[str, Path], context: str) -> None:
    """Each input variant as an MLflow dataset of the active run (the run page's "Datasets used"): its
    manifest's schema and row count, digest = the manifest's sha256, source = the variant's path."""
    import mlflow

    for name, path in inputs.items():
        mlflow.log_input(_dataset(name, str(path), variant_hash(path)), context=context)


@functools.lru_cache(maxsize=32)
def _dataset(name: str, path: str, digest: str):
    """The MLflow dataset of one variant version, built once per process (a training stage logs the same
    variants in each of its trials; the schema and profile of a manifest cost ~0.15 s)."""
    import warnings

    import mlflow
    import pandas as pd

    manifest = pd.read_parquet(VariantLayout(Path(path)).manifest)
    with warnings.catch_warnings():
        # MLflow's hints: integer columns in the schema, a path that two local source types could read
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_pandas(manifest, source=path, name=name, digest=digest[:16])


def ensure_experiment(name: str = DEFAULT_EXPERIMENT) -> str:
    """Create the database if needed and the experiment, with an artifact location under the repo root
    (with sqlite the default would be relative to whatever cwd first created it, e.g. a temp experiment
    workspace). Returns the experiment id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline machines: no usage pings
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    mlflow.set_tracking_uri(tracking_uri())
    # The first client call of a process builds the store, which creates and migrates a new database;
    # two processes migrating at once break it. MLflow caches the store per process, so after the first
    # call the lock only serialises the experiment look-up (milliseconds).
    with FileLock(f"{mlflow_db_path()}.lock", timeout=LOCK_TIMEOUT_S):
        client = mlflow.MlflowClient(tracking_uri())
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = mlflow_artifacts_dir() / name
        location.mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(name, artifact_location=mlflow_artifacts_uri(name))
        except MlflowException as error:
            # a process that does not take our lock (`mlflow ui`, an older checkout) created it first
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            return client.get_experiment_by_name(name).experiment_id


def mark_dead_runs_killed(stage: str, experiment_id: str) -> int:
    """Set to KILLED the RUNNING runs of ``stage`` started on this host by a process that no longer exists
    (SIGKILL, OOM killer, power loss); returns how many. Runs of other hosts are left alone: their pids
    mean nothing here."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id],
        f"tags.`fersynth.stage` = '{stage}' and tags.`fersynth.host` = '{host}' and attributes.status = 'RUNNING'",
    )
    dead = [run for run in running if not pid_alive(int(run.data.tags["fersynth.pid"]))]
    for run in dead:
        client.set_terminated(run.info.run_id, "KILLED")
    if dead:
        logger.warning(
            "marked %d run(s) of stage %s KILLED: still RUNNING but their process is gone (%s)",
            len(dead),
            stage,
            ", ".join(run.info.run_id for run in dead),
        )
    return len(dead)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``RunTerminated`` so the run can be closed (Python's default dies on the spot).
    Signal handlers can only be set from the main thread; elsewhere SIGTERM keeps its handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise RunTerminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        # None: the previous handler was not set from Python; the default is the closest we can restore
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextmanager
def start_run(
    stage: str,
    inputs: Mapping[str, Path] | None = None,
    params: Mapping | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator:
    """Open an MLflow run for ``stage``; ``inputs`` are variant directories whose hashes become tags.

    The run ends FINISHED, KILLED on SIGTERM or Ctrl-C (the exception still propagates, so the process
    exits non-zero) or FAILED on any other exception. Runs of the same stage left RUNNING by a dead
    process of this host are marked KILLED first.

    >>> with start_run("train", {"train": Path("data/original/fer2013")}, params={"lr": 0.01}) as run:
    ...     mlflow.log_metric("val_accuracy", 0.7)  # doctest: +SKIP
    """
    import mlflow

    experiment_id = ensure_experiment(experiment)
    mark_dead_runs_killed(stage, experiment_id)
    # "<dvc experiment>:<run>" under `dvc exp run`, so several trainings of one experiment stay apart
    name = run_name or stage
    if os.environ.get("DVC_EXP_NAME"):
        name = f"{os.environ['DVC_EXP_NAME']}:{name}" if run_name else os.environ["DVC_EXP_NAME"]
    all_tags = run_tags(stage, inputs or {}) | dict(tags or {})
    run, status = None, "FAILED"
    try:
        with _sigterm_raises():
            run = mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=all_tags)
            if params:
                mlflow.log_params(dict(params))
            log_inputs(inputs or {}, context=stage)
            yield run
        status = "FINISHED"
    except (KeyboardInterrupt, RunTerminated) as stop:
        status = "KILLED"
        logger.warning("run of stage %s stopped by %s", stage, type(stop).__name__)
        raise
    finally:
        # after the handler is restored: a second SIGTERM now ends the process, and the next start of
        # the stage marks the run KILLED
        if run is not None:
            mlflow.end_run(status)
