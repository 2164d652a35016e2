"""One way to save and load a trained network: its weights as safetensors and what it was built from as
JSON, side by side in one directory (:class:`fersynth.paths.CheckpointLayout`: ``model.safetensors``,
``config.json``). Loading unpickles nothing. :func:`save_checkpoint` / :func:`load_checkpoint` are the pair
every stage uses (train, demographics-train; :mod:`fersynth.modeling.trained` loads a ``fersynth train`` classifier).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from fersynth.paths import CheckpointLayout


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
    network from the config and loads the state into it (strictly)."""
    from safetensors.torch import load_file

    layout = CheckpointLayout(Path(directory))
    missing = [p.name for p in (layout.weights, layout.config) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a saved model: {', '.join(missing)} missing")
    return load_file(layout.weights), json.loads(layout.config.read_text())
