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


def quality_metrics_path(suite: str) -> Path:
    """``metrics/quality/<suite>.json`` in the running stage's workspace."""
    return workspace_root() / "metrics" / "quality" / f"{suite}.json"


def data_docs_dir(suite: str) -> Path:
    """``reports/data_docs/<suite>/`` (Great Expectations Data Docs site of one suite)."""
    return workspace_root() / "reports" / "data_docs" / suite


def ground_truth_path(demo_root: Path, dataset: str) -> Path:
    """The demo's ground truth for ``dataset``, kept beside (not inside) its native files."""
    return Path(demo_root) / "ground_truth" / f"{dataset}.csv"


def mlflow_db_path() -> Path:
    return project_root() / "mlflow.db"


def mlflow_artifacts_dir() -> Path:
    return project_root() / "mlartifacts"
