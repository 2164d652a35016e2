"""MLflow helper used by every training stage.

Tracking URI: ``MLFLOW_TRACKING_URI`` when it is set (a tracking server, e.g. the one ``make mlflow-server``
starts: ``export MLFLOW_TRACKING_URI=http://127.0.0.1:5000``), else ``sqlite:///<repo root>/mlflow.db`` with
the root from ``DVC_ROOT``, so runs made in ``dvc exp run --temp`` / ``--queue`` workspaces land in the main
repo's store. Every fersynth read and write of runs goes through :func:`tracking_uri`. The run is named after
``DVC_EXP_NAME`` and tagged with stage, git commit, host, pid and the hashes of its input variants.

Artifacts: with a sqlite database an experiment's artifacts live in ``mlartifacts/`` beside it, under plain
``file://`` locations that any MLflow client reads; when the database has moved with its repository (a clone
elsewhere, another machine), :mod:`~fersynth.tracking.relocate` rewrites the stored locations to the new place the next
time fersynth opens it (``fersynth mlflow-relocate`` does it alone, e.g. before ``mlflow ui``). Any other store
decides itself, e.g. a tracking server (``http(s)://``, ``mlflow-artifacts:`` locations it proxies to its
``--artifacts-destination``). A tracking server that does not answer is a one-line error before the first run,
not minutes of MLflow's retries. Experiments are tagged as classic machine-learning ones, so the MLflow 3 UI opens
them on their runs rather than on its GenAI overview.

Safe with parallel workers (``dvc queue start -j N``): a sqlite database and the experiment are created under
a file lock (a server serialises its own writes), and a run whose process dies does not stay RUNNING (see
``start_run``).
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock

from fersynth.atomic import pid_alive
from fersynth.errors import FersynthError
from fersynth.log import get_logger
from fersynth.paths import VariantLayout, mlflow_artifacts_dir, mlflow_db_path, project_root
from fersynth.tracking.relocate import ARTIFACT_ROOT_TAG, relocate_artifacts
from fersynth.variants.files import MAX_MANIFEST_BYTES, file_sha256, open_input

DEFAULT_EXPERIMENT = "fersynth"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# a first migration takes ~5 s; a holder stuck this long is a bug worth an error naming the lock file
LOCK_TIMEOUT_S = 300
DATASET_RETRIES = 3
SERVER_PROBE_TIMEOUT_S = 2
# a dataset another run inserted meanwhile: PostgreSQL's and sqlite's words for it
DUPLICATE_DATASET = re.compile(r"\bdataset_pk\b|UNIQUE constraint failed: datasets\.")
# MLflow 3's UI opens an experiment without this tag on its GenAI overview; "custom_model_development" is its
# "Machine learning" kind, which opens on the runs (mlflow/mlflow#20744 sets the tag the same way for GenAI)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MACHINE_LEARNING = "custom_model_development"
logger = get_logger(__name__)


class RunTerminated(SystemExit):
    """Raised by SIGTERM inside ``start_run``; uncaught, it exits the process with status 128 + SIGTERM."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set and not empty, else the repository's ``sqlite:///.../mlflow.db``."""
    return os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{mlflow_db_path()}"


def is_tracking_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (``http://``, ``https://``) rather than a database."""
    return urlparse(uri).scheme in ("http", "https")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute, or relative to the working directory); else None."""
    return Path(uri.removeprefix("sqlite:///")).resolve() if uri.startswith("sqlite:///") else None


def experiment_artifact_location(uri: str, name: str) -> str | None:
    """Where a new experiment ``name`` keeps its artifacts: with a sqlite database, ``mlartifacts/<name>`` beside
    it as a ``file://`` URI (MLflow's default would be relative to whatever cwd first created it, e.g. a temp
    experiment workspace); any other store (a tracking server, ``postgresql://``, ``mysql://``) decides (None)."""
    database = sqlite_path(uri)
    return None if database is None else (mlflow_artifacts_dir(database.parent) / name).as_uri()


def relocate_store() -> int:
    """:func:`relocate_artifacts` on the tracking database (under its lock), for MLflow clients that do not go
    through fersynth (``mlflow ui`` in a moved clone). Raises :class:`FersynthError` when the store is not a
    sqlite file that exists."""
    uri = tracking_uri()
    database = sqlite_path(uri)
    if database is None or not database.is_file():
        raise FersynthError(f"no sqlite tracking database at {uri}: only a moved mlflow.db needs relocating")
    with _store_lock(uri):
        return relocate_artifacts(database)


class TrackingServerUnreachable(FersynthError):
    """``MLFLOW_TRACKING_URI`` names a tracking server that does not answer."""


@functools.lru_cache(maxsize=8)
def check_tracking_server(uri: str) -> None:
    """Once per process and server: raise :class:`TrackingServerUnreachable` unless ``uri`` answers HTTP
    within :data:`SERVER_PROBE_TIMEOUT_S` (MLflow itself retries a dead server for minutes). Any HTTP answer
    counts, also an error status: a server that wants a login is there."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingServerUnreachable(
            f"the tracking server {uri} (MLFLOW_TRACKING_URI) does not answer ({reason}): start it with "
            "`fersynth mlflow-server start`, or `unset MLFLOW_TRACKING_URI` to log to the repository's mlflow.db"
        ) from None


def _use_tracking_uri(uri: str) -> None:
    """Make ``uri`` this process's MLflow tracking URI. MLflow also copies it into ``MLFLOW_TRACKING_URI``;
    that variable is put back as it was, so it only ever holds what the user set: a repository's sqlite URI
    left there would pin later calls and every child process (DVC stages started from here) to that
    repository, whatever their ``DVC_ROOT``."""
    import mlflow

    given = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    if given is None:
        os.environ.pop(TRACKING_URI_ENV, None)
    else:
        os.environ[TRACKING_URI_ENV] = given


def _store_lock(uri: str):
    """A file lock beside a sqlite database (creating or migrating one from two processes breaks it); other
    stores serialise their own writes."""
    if uri.startswith("sqlite:///"):
        return FileLock(f"{uri.removeprefix('sqlite:///')}.lock", timeout=LOCK_TIMEOUT_S)
    return nullcontext()


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
    return file_sha256(VariantLayout(Path(variant_dir)).manifest, MAX_MANIFEST_BYTES, "manifest")


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
    from mlflow.exceptions import MlflowException

    for name, path in inputs.items():
        dataset = _dataset(name, str(path), variant_hash(path))
        for attempt in range(DATASET_RETRIES):
            try:
                mlflow.log_input(dataset, context=context)
                break
            except MlflowException as error:
                # Two runs logging a new dataset at once (`dvc queue start -j 2` on one variant): the store looks
                # it up, then inserts it, and the later insert breaks the unique key. Again, it finds the row.
                if attempt + 1 == DATASET_RETRIES or not DUPLICATE_DATASET.search(str(error)):
                    raise
                time.sleep(0.1 * (attempt + 1))


@functools.lru_cache(maxsize=32)
def _dataset(name: str, path: str, digest: str):
    """The MLflow dataset of one variant version, built once per process (a training stage logs the same
    variants in each of its trials; the schema and profile of a manifest cost ~0.15 s)."""
    import warnings

    import mlflow
    import pandas as pd

    with open_input(VariantLayout(Path(path)).manifest, MAX_MANIFEST_BYTES, "manifest") as handle:
        manifest = pd.read_parquet(handle)
    with warnings.catch_warnings():
        # MLflow's hints: integer columns in the schema, a path that two local source types could read
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_pandas(manifest, source=path, name=name, digest=digest[:16])


def ensure_experiment(name: str = DEFAULT_EXPERIMENT) -> str:
    """Create the store if needed and the experiment (artifact location from :func:`experiment_artifact_location`,
    tagged as a machine-learning experiment); a sqlite store that moved is relocated first. Returns the id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline machines: no usage pings
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    uri = tracking_uri()
    if is_tracking_server(uri):
        check_tracking_server(uri)
    _use_tracking_uri(uri)
    # The first client call of a process builds the store, which creates and migrates a new database;
    # two processes migrating at once break it. MLflow caches the store per process, so after the first
    # call the lock only serialises the experiment look-up (milliseconds).
    with _store_lock(uri):
        database = sqlite_path(uri)
        if database is not None:
            relocate_artifacts(database)
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before the tag was set
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MACHINE_LEARNING)
            return experiment.experiment_id
        location = experiment_artifact_location(uri, name)
        tags = {EXPERIMENT_KIND_TAG: MACHINE_LEARNING}
        if location is not None:
            (mlflow_artifacts_dir(database.parent) / name).mkdir(parents=True, exist_ok=True)
            tags[ARTIFACT_ROOT_TAG] = mlflow_artifacts_dir(database.parent).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException as error:
            # a process that does not take our lock (`mlflow ui`, an older checkout, another client of the
            # same server) created it first
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
    nested: bool = False,
) -> Iterator:
    """Open an MLflow run for ``stage``; ``inputs`` are variant directories whose hashes become tags.
    ``nested``: a child of the run open in this process (one trial under its experiment's parent run).

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
            run = mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=all_tags, nested=nested)
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
