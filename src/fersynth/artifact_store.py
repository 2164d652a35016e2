"""MLflow artifact locations relative to the repository, so that ``mlflow.db`` and ``mlartifacts/`` can move
with it (a clone elsewhere, another machine). The database stores ``fersynth-repo:/mlartifacts/<experiment>/...``;
this artifact repository (registered with MLflow through the ``mlflow.artifact_repository`` entry point, so
``mlflow ui`` and ``mlflow.pyfunc.load_model`` find it too) reads and writes it under
:func:`fersynth.paths.project_root`: ``DVC_ROOT`` when DVC runs a stage (the main repository, also for queued
experiments), else the repository holding the working directory.

The URIs are named by :func:`fersynth.paths.mlflow_artifacts_uri`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from fersynth.paths import MLFLOW_ARTIFACT_SCHEME as SCHEME
from fersynth.paths import project_root


def repository_root(tracking_uri: str | None = None) -> Path:
    """The repository ``fersynth-repo:`` locations are relative to: the folder of the sqlite database that
    holds them (``mlflow.db`` sits at the repository root, wherever `mlflow ui` or a script runs from), else
    :func:`fersynth.paths.project_root`."""
    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
    return project_root()


def local_uri(artifact_uri: str, root: Path | None = None) -> str:
    """``file://`` URI of a ``fersynth-repo:`` one, under ``root`` (default the project root)."""
    parsed = urlparse(artifact_uri)
    relative = PurePosixPath(parsed.path.lstrip("/"))
    if parsed.scheme != SCHEME or ".." in relative.parts:
        raise ValueError(f"not a {SCHEME}: URI inside the repository: {artifact_uri!r}")
    return ((root or project_root()) / relative).as_uri()


class RepoArtifactRepository(LocalArtifactRepository):
    """A local artifact directory named relative to the repository of the tracking database."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
        root = repository_root(tracking_uri)
        super().__init__(local_uri(artifact_uri, root), tracking_uri=tracking_uri, registry_uri=registry_uri)
        self.artifact_uri = artifact_uri  # children (runs, models) keep the relative form in the database
