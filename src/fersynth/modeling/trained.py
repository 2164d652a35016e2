"""A ``fersynth train`` classifier as its consumers (evaluate, autolabel, calibrate, predict) load it: the
network rebuilt from its checkpoint, the input settings to decode images with, and its classes; and its class
probabilities for prepared images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fersynth.modeling.architectures import Classifier, build_model, channels_last
from fersynth.modeling.checkpoint import load_checkpoint
from fersynth.modeling.data import InputConfig
from fersynth.paths import trial_dirs


@dataclass(frozen=True)
class ClassifierSpec:
    """What a ``fersynth train`` checkpoint's consumers need from its config (which holds the whole
    ``TrainConfig``): the architecture to rebuild, the input settings to decode images with, the seed and
    the variants it was trained on (for leakage checks)."""

    architecture: str = "paper001_cnn"
    width: float = 1.0
    input: InputConfig = field(default_factory=InputConfig)
    seed: int = 0
    variants: tuple[str, ...] = ()


def load_trained(model_dir: Path) -> tuple[Classifier, ClassifierSpec, tuple[str, ...]]:
    """(model in eval mode, spec, classes) of a trained classifier: ``model_dir`` itself or, given an
    experiment trained in several trials, its first trial."""
    from fersynth.config import build

    directory = trial_dirs(Path(model_dir))[0]
    state, values = load_checkpoint(directory)
    missing = [k for k in ("architecture", "input", "classes") if k not in values]
    if missing:
        raise ValueError(f"{directory}: config.json lacks {missing}; not a `fersynth train` model")
    spec = build(ClassifierSpec, {k: values[k] for k in ClassifierSpec.__dataclass_fields__ if k in values})
    classes = tuple(values["classes"])
    model = build_model(spec.architecture, len(classes), spec.input.channels, spec.input.size, width=spec.width)
    model.load_state_dict(state)
    return channels_last(model).eval(), spec, classes


def class_probabilities(model, images, n_classes: int, batch_size: int = 256, desc: str | None = None):
    """Softmax over the classes, one float32 row per image (uint8 N x C x H x W, prepared as in training), in
    eval mode without gradients; ``desc`` shows a progress bar.

    >>> import numpy as np, torch
    >>> linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> p = class_probabilities(linear, np.zeros((2, 1, 2, 2), np.uint8), 3)
    >>> p.shape, p.dtype.name, bool(np.allclose(p.sum(1), 1))
    ((2, 3), 'float32', True)
    """
    import numpy as np
    import torch

    from fersynth.log import progress
    from fersynth.modeling.data import BatchLoader

    model.eval()
    loader = BatchLoader(images, np.zeros(len(images), np.int64), batch_size, shuffle=False)
    with torch.no_grad():
        batches = progress(loader, desc=desc, unit="batch") if desc else loader
        parts = [torch.softmax(model(x).float(), 1) for x, _ in batches]
    return torch.cat(parts).numpy() if parts else np.zeros((0, n_classes), np.float32)
