"""MLflow's entry point for ``fersynth-repo:`` artifact locations (:mod:`fersynth.artifact_store`). It imports
nothing at module level, so MLflow can load it even while ``fersynth.artifact_store`` (which imports MLflow) is
itself being imported, and it uses fersynth as imported now (a `fersynth warm` worker re-imports fersynth from
disk; MLflow keeps the callable it loaded first)."""

from __future__ import annotations

import importlib


def repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
    module = importlib.import_module("fersynth.artifact_store")
    return module.RepoArtifactRepository(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
