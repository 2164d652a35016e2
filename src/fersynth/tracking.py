"""MLflow helper used by every training stage.

Tracking URI is ``sqlite:///<repo root>/mlflow.db`` with the root from ``DVC_ROOT``, so runs made in
``dvc exp run --temp`` / ``--queue`` workspaces land in the main repo's store; the run is named after
``DVC_EXP_NAME`` and tagged with stage, git commit and the hashes of its input variants.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from fersynth.paths import VariantLayout, mlflow_artifacts_dir, mlflow_db_path, project_root

DEFAULT_EXPERIMENT = "fersynth"


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
    tags = {"fersynth.stage": stage, "fersynth.dvc_root": str(project_root())}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    for name, path in inputs.items():
        tags[f"fersynth.input.{name}.sha256"] = variant_hash(path)
    return tags


def ensure_experiment(name: str = DEFAULT_EXPERIMENT) -> str:
    """Create the experiment with an artifact location under the repo root (with sqlite the default
    would be relative to whatever cwd first created it, e.g. a temp experiment workspace)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline machines: no usage pings
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = mlflow_artifacts_dir() / name
    location.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=location.as_uri())


@contextmanager
def start_run(
    stage: str,
    inputs: Mapping[str, Path] | None = None,
    params: Mapping | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
) -> Iterator:
    """Open an MLflow run for ``stage``; ``inputs`` are variant directories whose hashes become tags.

    >>> with start_run("train", {"train": Path("data/original/fer2013")}, params={"lr": 0.01}) as run:
    ...     mlflow.log_metric("val_accuracy", 0.7)  # doctest: +SKIP
    """
    import mlflow

    experiment_id = ensure_experiment(experiment)
    # "<dvc experiment>:<run>" under `dvc exp run`, so several trainings of one experiment stay apart
    name = run_name or stage
    if os.environ.get("DVC_EXP_NAME"):
        name = f"{os.environ['DVC_EXP_NAME']}:{name}" if run_name else os.environ["DVC_EXP_NAME"]
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=run_tags(stage, inputs or {})) as run:
        if params:
            mlflow.log_params(dict(params))
        yield run
