"""The code MLflow runs to load and serve a fersynth classifier logged as an MLflow model ("models from code":
nothing is pickled). It needs MLflow and the model's own requirements, not fersynth: the network and image
helpers it uses travel with the model as ``code/fersynth_pyfunc/`` (copies of fersynth's modules, see
:func:`fersynth.train.mlflow_model.stage_code`), and its artifacts are the trial's safetensors weights and
``config.json``. This file is run by MLflow, never imported by fersynth.

Input, either of:

- pixels: integers 0-255, N x C x size x size (grey: C = 1; RGB: 3), as ``fersynth predict`` prepares a face
  (any integer dtype within 0-255; floats are refused: a [0, 1] array would otherwise be read as black);
- pictures: encoded image bytes (PNG, JPEG, ...; any size and mode), one face each, as a DataFrame or dict
  column ``image`` (over JSON: base64 strings), a list of them, or one ``bytes``. They are prepared as in
  training: 8-bit, grey with the trial's preprocessing (or RGB), bicubic resize.

Output: one column of probabilities per class. Anything else is refused with a message (``MlflowException``,
HTTP 400 when served).

>>> model = mlflow.pyfunc.load_model("models:/fersynth-fer2013@champion")  # doctest: +SKIP
>>> model.predict(pd.DataFrame({"image": [open("face.png", "rb").read()]})).idxmax(axis=1)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

CODE_PACKAGE = "fersynth_pyfunc"  # fersynth.train.mlflow_model.CODE_PACKAGE
IMAGE_COLUMN = "image"
MAX_PIXELS = 40_000_000  # a larger picture is refused from its header (fersynth predict's limit)
BATCH = 256


def shipped_modules() -> tuple:
    """This model's copies of fersynth's architectures, images and preprocess modules. MLflow puts the model's
    ``code/`` first on sys.path just before loading it, but a package of the same name that another model
    imported earlier (another fersynth version, or a temporary folder since deleted) would win from the module
    cache: it is dropped first, and each model keeps references to its own modules."""
    for name in [m for m in sys.modules if m == CODE_PACKAGE or m.startswith(f"{CODE_PACKAGE}.")]:
        del sys.modules[name]
    return tuple(
        importlib.import_module(f"{CODE_PACKAGE}.{name}") for name in ("architectures", "images", "preprocess")
    )


def refuse(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(f"fersynth model: {message}")


class FersynthClassifier(PythonModel):
    def load_context(self, context) -> None:
        import torch
        from safetensors.torch import load_file

        architectures, self.imaging, preprocess = shipped_modules()
        config = json.loads(Path(context.artifacts["config"]).read_text())
        shape = config["input"]
        self.classes = list(config["classes"])
        self.channels, self.size = int(shape["channels"]), int(shape["size"])
        self.preprocess = preprocess.Preprocess(preprocess.PreprocessConfig(**shape.get("preprocess", {})))
        model = architectures.build_model(
            config["architecture"], len(self.classes), self.channels, self.size, width=config["width"]
        )
        model.load_state_dict(load_file(context.artifacts["weights"]))
        self.model = architectures.channels_last(model).eval()
        self.torch = torch

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        images = self.images(model_input)
        parts = []
        with self.torch.no_grad():
            for start in range(0, len(images), BATCH):
                x = self.torch.from_numpy(images[start : start + BATCH].astype(np.float32) / 255.0)
                parts.append(self.torch.softmax(self.model(x).float(), 1).numpy())
        probabilities = np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)
        return pd.DataFrame(probabilities, columns=self.classes)

    # input -----------------------------------------------------------------------------------------------
    def images(self, model_input) -> np.ndarray:
        """uint8 N x C x size x size from any accepted input; :func:`refuse` for the rest."""
        if isinstance(model_input, pd.DataFrame):
            if IMAGE_COLUMN not in model_input.columns:
                raise refuse(
                    f"a table needs an {IMAGE_COLUMN!r} column of encoded pictures, got columns "
                    f"{list(model_input.columns)[:5]}; pixels go in as an N x {self.channels} x {self.size} x "
                    f'{self.size} array (JSON: {{"inputs": [...]}})'
                )
            return self.pictures(list(model_input[IMAGE_COLUMN]))
        if isinstance(model_input, dict):
            if set(model_input) != {IMAGE_COLUMN}:
                raise refuse(f"a dict input takes one key, {IMAGE_COLUMN!r}, got {sorted(model_input)[:5]}")
            return self.pictures(list(np.atleast_1d(np.asarray(model_input[IMAGE_COLUMN], dtype=object))))
        if isinstance(model_input, (bytes, bytearray, str)):
            return self.pictures([model_input])
        if isinstance(model_input, (list, tuple)) and model_input and isinstance(model_input[0], (bytes, str)):
            return self.pictures(list(model_input))
        return self.pixels(model_input)

    def pixels(self, values) -> np.ndarray:
        """Integers 0-255 of shape N x C x size x size as uint8; refuses floats, other shapes and ranges."""
        try:
            array = np.asarray(values)
        except ValueError as error:  # ragged nested lists
            raise refuse(f"pixels must form one N x C x H x W array: {error}") from None
        expected = f"N x {self.channels} x {self.size} x {self.size}"
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise refuse(f"pixels must be integers 0-255 ({expected}), got {array.dtype} values")
        if array.ndim != 4 or array.shape[1:] != (self.channels, self.size, self.size):
            raise refuse(f"pixels must be {expected}, got shape {array.shape}")
        if array.dtype.kind in "bf":
            low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
            hint = ": multiply by 255 and round to uint8" if array.dtype.kind == "f" and 0 <= low and high <= 1 else ""
            raise refuse(f"pixels must be integers 0-255 (uint8), got {array.dtype} within [{low:g}, {high:g}]{hint}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise refuse(f"pixels must be within 0-255, got {array.dtype} within [{array.min()}, {array.max()}]")
        return array.astype(np.uint8)

    def pictures(self, items: list) -> np.ndarray:
        out = np.empty((len(items), self.channels, self.size, self.size), np.uint8)
        for index, item in enumerate(items):
            try:
                out[index] = self.prepare(self.decode(item))
            except MlflowException as error:
                raise refuse(f"picture {index}: {error.message.removeprefix('fersynth model: ')}") from None
        return out

    def decode(self, item):
        """A PIL image from bytes, or from base64 text (JSON carries bytes as base64)."""
        if isinstance(item, str):
            try:
                item = base64.b64decode(item, validate=False)
            except (binascii.Error, ValueError) as error:
                raise refuse(f"not base64: {error}") from None
        if not isinstance(item, (bytes, bytearray)):
            raise refuse(f"expected encoded image bytes (or base64 text), got {type(item).__name__}")
        try:
            return self.imaging.decode_image(bytes(item), self.imaging.ImageLimits(max_pixels=MAX_PIXELS, min_side=1))
        except self.imaging.ImageRejected as error:
            raise refuse(str(error)) from None
        except Exception as error:  # noqa: BLE001 - PIL raises many types for bytes that are no picture
            raise refuse(f"not a picture: {error}") from None

    def prepare(self, image) -> np.ndarray:
        """One picture as the network sees it: fersynth.modeling.data.model_input's steps (test_mlflow_model
        checks they give the same bytes)."""
        mode = "L" if self.channels == 1 else "RGB"
        try:
            image = self.imaging.to_8bit(image)  # a 16-bit picture by its value range, not clipped to white
        except self.imaging.ImageRejected as error:
            raise refuse(str(error)) from None
        image = self.preprocess(image.convert("L")) if mode == "L" else image.convert("RGB")
        array = np.asarray(image.resize((self.size, self.size), resample=3).convert(mode))  # bicubic
        return array[None] if mode == "L" else array.transpose(2, 0, 1)


mlflow.models.set_model(FersynthClassifier())
