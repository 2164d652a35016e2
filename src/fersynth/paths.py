"""The one place that knows where things live: project root, DVC_ROOT, variant and metrics layout."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def project_root() -> Path:
    """Repository root: ``DVC_ROOT`` when DVC runs us (also inside ``dvc exp run --temp``), else the
    nearest parent of the working directory that holds ``dvc.yaml`` or ``.git``, else the cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    return find_project_root(here) or here


def find_project_root(start: Path) -> Path | None:
    """The nearest of ``start`` and its parents holding ``dvc.yaml`` or ``.git``; None if none does."""
    start = Path(start).resolve()
    for candidate in (start, *start.parents):
        if (candidate / "dvc.yaml").exists() or (candidate / ".git").exists():
            return candidate
    return None


def params_path() -> Path:
    """``params.yaml`` of the workspace being run: the project root found from the working directory
    (not ``DVC_ROOT``: a queued or temp experiment runs in its own copy, with its own params)."""
    here = Path.cwd().resolve()
    return (find_project_root(here) or here) / "params.yaml"


def workspace_root() -> Path:
    """Where outputs of the running stage go: the cwd (a temp experiment workspace under
    ``dvc exp run --temp`` differs from ``DVC_ROOT``)."""
    return Path.cwd().resolve()


@dataclass(frozen=True)
class VariantLayout:
    """Files of one dataset variant directory ``data/<variant>/``."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def shards_dir(self) -> Path:
        return self.root / "images"

    def shard(self, index: int) -> Path:
        return self.shards_dir / f"shard-{index:05d}.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine.csv"


@dataclass(frozen=True)
class CheckpointLayout:
    """Files of one saved model directory (:mod:`fersynth.modeling.checkpoint`): safetensors weights and
    the JSON config the model is rebuilt from."""

    root: Path

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def config(self) -> Path:
        return self.root / "config.json"


def floor_path(model_dir: Path) -> Path:
    """``floor.npz`` at an experiment's model directory (beside its ``seed-<s>/`` trials, or beside the one
    model): the HOG + logistic-regression floor fitted on the experiment's rows (:mod:`fersynth.modeling.floor`)."""
    return Path(model_dir) / "floor.npz"


def trials_record_path(model_dir: Path) -> Path:
    """``trials.json`` at an experiment's model directory: every trial's seed and validation accuracy, so that
    a consumer holding only the directory picks the trial the MLflow registry calls best
    (:func:`fersynth.train.selection.best_trial_dir`)."""
    return Path(model_dir) / "trials.json"


TRIAL_PREFIX = "seed-"


def trial_name(seed: int) -> str:
    """``seed-<s>``: one trial's directory under an experiment's model directory, and its MLflow run suffix."""
    return f"{TRIAL_PREFIX}{seed}"


def trial_seed(trial_dir: Path) -> int | None:
    """The seed of a ``seed-<s>`` trial directory; None for any other name (a single-trial model)."""
    name = Path(trial_dir).name
    number = name.removeprefix(TRIAL_PREFIX)
    return int(number) if name.startswith(TRIAL_PREFIX) and number.isdigit() else None


def trial_dirs(model_dir: Path) -> list[Path]:
    """The directories holding one trained model each: ``model_dir`` itself (one trial) or its
    ``seed-<s>/`` subdirectories in seed order."""
    model_dir = Path(model_dir)
    if CheckpointLayout(model_dir).weights.exists():
        return [model_dir]
    found = [d for d in model_dir.glob("*") if trial_seed(d) is not None and CheckpointLayout(d).weights.exists()]
    if not found:
        raise FileNotFoundError(f"no trained model under {model_dir}")
    return sorted(found, key=trial_seed)


def array_cache_dir() -> Path:
    """``.cache/arrays/`` under the project root: decoded images as uint8 arrays, content-addressed
    (:func:`fersynth.modeling.data.decoded`), shared by train, evaluate and autolabel."""
    return project_root() / ".cache" / "arrays"


@dataclass(frozen=True)
class EvaluateLayout:
    """Files ``fersynth evaluate`` writes under its output directory (dvc.yaml: ``metrics/evaluate``),
    which ``fersynth compare`` and ``fersynth report`` read."""

    root: Path = Path("metrics") / "evaluate"

    @classmethod
    def under(cls, metrics_dir: Path) -> EvaluateLayout:
        """The layout inside a metrics folder holding ``evaluate/`` (what ``fersynth report`` is given)."""
        return cls(Path(metrics_dir) / "evaluate")

    @property
    def cross_dataset(self) -> Path:
        return self.root / "cross_dataset.json"

    @property
    def cross_dataset_png(self) -> Path:
        return self.root / "cross_dataset.png"

    @property
    def macro_f1(self) -> Path:
        return self.root / "macro_f1.json"

    @property
    def fairness(self) -> Path:
        return self.root / "fairness.json"

    @property
    def robustness(self) -> Path:
        return self.root / "robustness.json"

    @property
    def floor(self) -> Path:
        """Each model's HOG + logistic-regression floor per test set, and the cells below it."""
        return self.root / "floor.json"

    @property
    def one_class(self) -> Path:
        """The model x test set cells where a model answers one class, or no better than a constant answer."""
        return self.root / "one_class.json"

    @property
    def true_labels(self) -> Path:
        """Accuracy against the demo's hidden true labels (the given test labels carry planted flips)."""
        return self.root / "true_labels.json"

    @property
    def per_class_dir(self) -> Path:
        return self.root / "per_class"

    def per_class(self, model: str, test: str) -> Path:
        """Mean classification report of ``model``'s trials on ``test``."""
        return self.per_class_dir / model / f"{test}.json"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def predictions(self, model: str, test: str) -> Path:
        """One row per (seed, image): ``seed, key, label, predicted, correct``."""
        return self.predictions_dir / model / f"{test}.csv"

    @property
    def confusion_dir(self) -> Path:
        return self.root / "confusion"

    def confusion(self, model: str, test: str) -> Path:
        """``actual, predicted`` rows for DVC's confusion template; the figure is :meth:`confusion_png`."""
        return self.confusion_dir / model / f"{test}.csv"

    @property
    def confusion_figures_dir(self) -> Path:
        """Confusion-matrix PNGs for the report: outside ``confusion/``, which ``dvc plots`` draws from the CSVs
        (a PNG there would show every matrix twice)."""
        return self.root / "confusion_figures"

    def confusion_png(self, model: str, test: str) -> Path:
        return self.confusion_figures_dir / model / f"{test}.png"

    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    def scores(self, model: str) -> Path:
        """One model's rows of every summary table (accuracy, macro-F1, floor, true labels, fairness,
        robustness): what ``fersynth evaluate --model`` writes, one DVC stage per model, and what
        ``fersynth evaluate-summary`` gathers."""
        return self.scores_dir / f"{model}.json"


def quality_metrics_path(suite: str) -> Path:
    """``metrics/quality/<suite>.json`` in the running stage's workspace."""
    return workspace_root() / "metrics" / "quality" / f"{suite}.json"


def data_docs_dir() -> Path:
    """``reports/data_docs/``: the one Great Expectations Data Docs site of every suite (:class:`DataDocsLayout`)."""
    return workspace_root() / "reports" / "data_docs"


@dataclass(frozen=True)
class DataDocsLayout:
    """The Data Docs site: each ``validate`` stage owns its suite's two page folders, the ``data-docs``
    stage the index and the static files. ``validations/<suite>`` and ``expectations/<suite>`` are Great
    Expectations' own layout (a page's links to the index and ``static/`` are relative to the site root),
    so they are named here, not chosen."""

    root: Path

    @property
    def index(self) -> Path:
        return self.root / "index.html"

    @property
    def static(self) -> Path:
        return self.root / "static"

    @property
    def validations_dir(self) -> Path:
        return self.root / "validations"

    def validations(self, suite: str) -> Path:
        return self.validations_dir / suite

    def expectations(self, suite: str) -> Path:
        return self.root / "expectations" / suite

    def entries(self, suite: str) -> Path:
        """The suite's rows of the site index (JSON), written beside its validation pages."""
        return self.validations(suite) / "index-entries.json"


def ground_truth_path(demo_root: Path, dataset: str) -> Path:
    """The demo's ground truth for ``dataset``, kept beside (not inside) its native files."""
    return Path(demo_root) / "ground_truth" / f"{dataset}.csv"


def mlflow_db_path() -> Path:
    return project_root() / "mlflow.db"


def mlflow_artifacts_dir(root: Path | None = None) -> Path:
    """``mlartifacts/`` beside a tracking database: under ``root`` (the folder of ``mlflow.db``), default the
    project root. Experiments of a repository's database keep their artifacts here."""
    return (root or project_root()) / "mlartifacts"


def in_workspace(path: Path) -> bool:
    """Whether ``path`` lies in the repository's own workspace: under the project root, and not in a DVC temp
    experiment workspace (``.dvc/tmp/exps/...``: ``dvc exp run --temp`` and queued runs) nor elsewhere."""
    root, resolved = project_root(), Path(path).resolve()
    return resolved.is_relative_to(root) and not resolved.is_relative_to(root / ".dvc")


def original_variant(dataset: str) -> Path:
    """``data/original/<dataset>``: the variant ``fersynth ingest`` writes for a source (dvc.yaml's ingest outs)."""
    return Path("data") / "original" / dataset


def mlflow_server_dir() -> Path:
    """``.mlflow-server/`` under the project root (git-ignored): the local tracking server's state."""
    return project_root() / ".mlflow-server"


@dataclass(frozen=True)
class MlflowServerLayout:
    """Files of a local tracking server (:mod:`fersynth.ops.mlflow_server`) under its folder."""

    root: Path

    @property
    def postgres_dir(self) -> Path:
        """Owned by the PostgreSQL service user: the cluster, its socket folder and its log."""
        return self.root / "pg"

    @property
    def postgres_data(self) -> Path:
        return self.postgres_dir / "data"

    @property
    def postgres_socket_dir(self) -> Path:
        return self.postgres_dir / "run"

    @property
    def postgres_log(self) -> Path:
        return self.postgres_dir / "postgres.log"

    @property
    def postgres_password(self) -> Path:
        """libpq's password file (``PGPASSFILE``) of the server's database role, readable by us only."""
        return self.root / "pgpass"

    @property
    def sqlite_db(self) -> Path:
        """The server's store when PostgreSQL is not available."""
        return self.root / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        """``--artifacts-destination``: the artifacts the server stores for its clients."""
        return self.root / "artifacts"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def state(self) -> Path:
        """JSON naming what runs (URI, process group, backend) for ``fersynth mlflow-server stop``."""
        return self.root / "server.json"

    @property
    def lock(self) -> Path:
        """Held by ``start`` and ``stop``: one of them at a time works on the folder."""
        return self.root / "server.lock"

    @property
    def postgres_initdb_password(self) -> Path:
        """The role's password for ``initdb --pwfile``, there only while initdb runs."""
        return self.postgres_dir / "initdb-password"

    @property
    def apt_log(self) -> Path:
        """Output of ``apt-get install postgresql`` (``--install-postgres``)."""
        return self.root / "apt-get.log"
