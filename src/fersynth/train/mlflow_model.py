"""Trained classifiers as MLflow models: every trial is logged in its run as a pyfunc model (from code:
:mod:`fersynth.train.pyfunc_code`, with the trial's safetensors weights and config as its artifact, a signature
and an input example), and the best trial of an experiment (highest validation accuracy, never the test split)
is registered as ``fersynth-<experiment>``. The first log in a process costs ~2 s of imports (``fersynth warm``
preloads them); each after that ~0.05 s."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from fersynth.train.selection import best_trial

CODE = Path(__file__).with_name("pyfunc_code.py")
REQUIREMENTS = ("torch", "torchvision", "safetensors", "numpy", "pandas", "mlflow")


def registered_name(experiment: str) -> str:
    return f"fersynth-{experiment}"


def log_trial_model(trial_dir: Path, example: np.ndarray, probabilities: np.ndarray, classes) -> str:
    """Log ``trial_dir`` (a saved ``fersynth train`` trial) as the active run's ``model``; returns its URI.
    ``example``: a few of the trial's own input images (uint8 N x C x H x W); ``probabilities``: the trial's
    output for them (the signature's output schema)."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    signature = infer_signature(example, pd.DataFrame(probabilities.astype(np.float32), columns=list(classes)))
    with tempfile.TemporaryDirectory() as staging, warnings.catch_warnings():
        # MLflow names an artifact after its directory: the same name for every trial (not "seed-3" or a temp name)
        weights = Path(staging) / "weights"
        shutil.copytree(trial_dir, weights)
        warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": the signature validates input
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(CODE),
            artifacts={"model": str(weights)},
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
        )
    return info.model_uri


def register_best(experiment: str, trials: list[dict]) -> dict:
    """Register :func:`best_trial` under :func:`registered_name`; ``trials``: ``seed``, ``best_val_accuracy`` and
    ``model_uri`` each."""
    import mlflow

    best = best_trial(trials)
    tags = {"fersynth.experiment": experiment, "fersynth.trial_seed": str(best["seed"])}
    version_ = mlflow.register_model(best["model_uri"], registered_name(experiment), tags=tags)
    return {"name": version_.name, "version": version_.version, "seed": best["seed"], "model_uri": best["model_uri"]}


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out
