"""Trained classifiers as MLflow models that load and serve with MLflow and their declared requirements alone
(fersynth need not be installed): every trial is logged in its run as a pyfunc model from code
(:mod:`fersynth.train.pyfunc_code`), with the fersynth modules that code runs copied in as its ``code_paths``
(:func:`stage_code`), the trial's safetensors weights and ``config.json`` as its artifacts, an output signature
and an input example. The best trial of a training (highest validation accuracy, never the test split) is
registered as ``fersynth-<experiment>`` with its model card as the version's description; ``@champion`` names
the version of the current DVC experiment (:func:`is_current`). The first log in a process costs ~2 s of imports
(``fersynth warm`` preloads them); each after that ~0.2 s (0.1 s of it: loading the logged model back to check it
reproduces the trial)."""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np

from fersynth.paths import CheckpointLayout, in_workspace
from fersynth.train.selection import best_trial

CODE = Path(__file__).with_name("pyfunc_code.py")
CODE_PACKAGE = "fersynth_pyfunc"  # not "fersynth": a process that has fersynth must not see it shadowed
# fersynth modules the model's code runs, copied into CODE_PACKAGE; each may import third-party packages only
SHIPPED_MODULES = {
    "architectures": "fersynth.modeling.architectures",
    "preprocess": "fersynth.modeling.preprocess",
    "images": "fersynth.variants.images",
}
REQUIREMENTS = ("mlflow", "torch", "torchvision", "safetensors", "numpy", "pandas", "pillow", "opencv-python-headless")
CHAMPION = "champion"
DESCRIPTION_LIMIT = 5000  # characters MLflow's registry keeps for a version's description


def registered_name(experiment: str) -> str:
    return f"fersynth-{experiment}"


def stage_code(directory: Path) -> Path:
    """Write the package :data:`CODE_PACKAGE` (copies of :data:`SHIPPED_MODULES`) under ``directory``; returns
    its folder, for ``code_paths``. Raises ``RuntimeError`` if a module to ship imports fersynth: the copy would
    fail where fersynth is not installed."""
    package = Path(directory) / CODE_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        '"""Copies of the fersynth modules this MLflow model runs, made when it was logged."""\n'
    )
    for name, module in SHIPPED_MODULES.items():
        source = Path(importlib.import_module(module).__file__).read_text()
        if fersynth_imports(source):
            raise RuntimeError(f"{module} imports {sorted(fersynth_imports(source))}: it cannot ship in a model")
        (package / f"{name}.py").write_text(source)
    return package


def fersynth_imports(source: str) -> set[str]:
    """fersynth (or relative) modules that ``source`` imports anywhere, lazily inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "fersynth"}
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "fersynth"):
            found.add("." * node.level + (node.module or ""))
    return found


def log_trial_model(trial_dir: Path, example: np.ndarray, classes) -> str:
    """Log ``trial_dir`` (a saved ``fersynth train`` trial) as the active run's ``model``; returns its URI.
    ``example``: a few of the trial's own input images (uint8 N x C x H x W), the input example."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # No input schema: MLflow would cast served JSON to it (floats in [0, 1] to uint8 zeros, silently) and
    # could not also take pictures; the model checks its input itself and refuses with a message.
    outputs = Schema([ColSpec("float", name) for name in classes])
    layout = CheckpointLayout(Path(trial_dir))
    with tempfile.TemporaryDirectory() as staging, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": it checks its input itself
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(CODE),
            artifacts={"weights": str(layout.weights), "config": str(layout.config)},
            code_paths=[str(stage_code(Path(staging)))],
            signature=ModelSignature(outputs=outputs),
            input_example=np.ascontiguousarray(example),
            pip_requirements=_requirements(),
            metadata={"classes": list(classes), "input": _input_note(example)},
        )
    _check_reproduces(_readable_in_place(info), trial_dir, example)
    return info.model_uri


def _readable_in_place(info) -> str:
    """The logged model's folder when the store keeps it on this machine (loading from there copies nothing: a
    VGG's weights are 0.5 GB), else its URI."""
    import mlflow

    location = urlparse(mlflow.get_logged_model(info.model_id).artifact_location)
    return url2pathname(location.path) if location.scheme == "file" else info.model_uri


def _check_reproduces(model_uri: str, trial_dir: Path, example: np.ndarray) -> None:
    """Load the logged model as a user would and raise ``RuntimeError`` unless it gives the probabilities of the
    saved trial for ``example``, both computed on the CPU (a shipped module missing or differing, or weights that
    do not load, shows up here at training rather than at serving)."""
    import mlflow
    import torch

    from fersynth.modeling.architectures import build_model, channels_last
    from fersynth.modeling.checkpoint import load_checkpoint

    state, config = load_checkpoint(Path(trial_dir))
    shape = config["input"]
    network = build_model(
        config["architecture"], len(config["classes"]), shape["channels"], shape["size"], width=config["width"]
    )
    network.load_state_dict(state)
    with torch.no_grad():  # the scaling of training's batches (BatchLoader: uint8 / 255)
        logits = channels_last(network).eval()(torch.from_numpy(example.astype(np.float32) / 255.0))
    expected = torch.softmax(logits.float(), 1).numpy()
    served = mlflow.pyfunc.load_model(model_uri).predict(example).to_numpy()
    if served.shape != expected.shape or not np.allclose(served, expected, atol=1e-5):
        raise RuntimeError(f"the MLflow model {model_uri} does not reproduce its trial's probabilities")


def _input_note(example: np.ndarray) -> str:
    _, channels, height, width = example.shape
    return (
        f"uint8 pixels 0-255, N x {channels} x {height} x {width} (JSON: {{'inputs': [...]}}); or encoded pictures, "
        "one face each, in an 'image' column (JSON: base64 strings in dataframe_split or {'inputs': {'image': [...]}})"
    )


def is_current(model_dir: Path) -> bool:
    """Whether a training writing ``model_dir`` is the repository's current DVC experiment, whose best trial
    becomes ``@champion``: a DVC stage (``dvc repro``, ``dvc exp run``) writing into the workspace itself. A queued
    or temp experiment (its own copy under ``.dvc/tmp``) or a side run outside DVC (``torchrun`` by hand)
    registers its version, tagged, and leaves the alias where it was."""
    return bool(os.environ.get("DVC_ROOT")) and in_workspace(Path(model_dir))


def register_best(experiment: str, trials: list[dict], card: str, weights: Path, champion: bool) -> dict:
    """Register :func:`best_trial` under :func:`registered_name` with the model ``card`` as its description and
    the sha256 of its ``weights`` file as a tag (which version a model directory holds); ``champion``: point
    ``@champion`` at it. ``trials``: ``seed``, ``best_val_accuracy`` and ``model_uri`` each."""
    import mlflow

    best = best_trial(trials)
    name = registered_name(experiment)
    tags = {
        "fersynth.experiment": experiment,
        "fersynth.trial_seed": str(best["seed"]),
        "fersynth.best_val_accuracy": str(best["best_val_accuracy"]),
        "fersynth.weights_sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    registered = mlflow.register_model(best["model_uri"], name, tags=tags)
    client = mlflow.MlflowClient()
    client.update_registered_model(name, description=_model_description(experiment))
    client.update_model_version(name, registered.version, description=_card_description(card))
    if champion:
        client.set_registered_model_alias(name, CHAMPION, registered.version)
    return {"name": name, "version": registered.version, "seed": best["seed"], "model_uri": best["model_uri"]}


def _model_description(experiment: str) -> str:
    return (
        f"The best-validation trial of each `fersynth train {experiment}` training (params.yaml: train.{experiment}), "
        f"one version per training. `@{CHAMPION}`: the version the repository's workspace holds. A version's "
        "description is its model card; it loads and serves with MLflow alone (see its pyfunc code)."
    )


def _card_description(card: str) -> str:
    """The card, cut to what the registry keeps (the full card is MODEL_CARD.md beside the weights)."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    note = "\n\n[cut: the full card is MODEL_CARD.md in the model directory and in the parent run's artifacts]\n"
    return card[: DESCRIPTION_LIMIT - len(note)] + note


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out
