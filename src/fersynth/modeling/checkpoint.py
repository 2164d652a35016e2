"""One way to save and load a trained network: its weights as safetensors and what it was built from as
JSON, side by side in one directory (:class:`fersynth.paths.CheckpointLayout`: ``model.safetensors``,
``config.json``). Loading unpickles nothing. :func:`save_checkpoint` / :func:`load_checkpoint` are the pair
every stage uses (train, demographics-train; :mod:`fersynth.modeling.trained` loads a ``fersynth train``
classifier). A model directory comes from a DVC remote or another checkout: both files are checked (regular,
bounded size) before they are read, and refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from fersynth.errors import InputError
from fersynth.paths import CheckpointLayout
from fersynth.variants.files import MAX_WEIGHTS_BYTES, check_input, read_json_bounded


def save_checkpoint(directory: Path, model: nn.Module, config: dict) -> None:
    """Write ``model``'s state (contiguous CPU tensors) and ``config`` (JSON) into ``directory``, created
    if missing. Atomicity is the caller's: write into an :func:`fersynth.atomic.atomic_path` folder.
    Example: ``save_checkpoint(out, model, asdict(config) | {"classes": list(classes)})``."""
    from safetensors.torch import save_file

    layout = CheckpointLayout(Path(directory))
    layout.root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, layout.weights)
    layout.config.write_text(json.dumps(config, indent=2) + "\n")


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config) of a directory written by :func:`save_checkpoint`; the caller builds the
    network from the config and loads the state into it (strictly). A weights file or config that is not a
    regular file of a sane size (a FIFO, a link to ``/dev/zero``, 2 GB of config) is an :class:`InputError`."""
    from safetensors.torch import load_file

    layout = CheckpointLayout(Path(directory))
    missing = [p.name for p in (layout.weights, layout.config) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a saved model: {', '.join(missing)} missing")
    config = read_checkpoint_config(directory)
    # safetensors maps the file and checks every tensor's offsets against its size: bounded by the stat
    check_input(layout.weights, MAX_WEIGHTS_BYTES, "model weights")
    return load_file(layout.weights), config


def read_checkpoint_config(directory: Path) -> dict:
    """The ``config.json`` of a saved model directory (a JSON object of at most a few MB), or a one-line
    :class:`InputError`; for a consumer that needs the config alone (which variants a model was trained on)."""
    path = CheckpointLayout(Path(directory)).config
    config = read_json_bounded(path, what="model config")
    if not isinstance(config, dict):
        raise InputError(f"model config {path}: not a JSON object but {type(config).__name__}")
    return config
