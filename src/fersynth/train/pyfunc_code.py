"""The code MLflow runs to load a fersynth classifier logged as an MLflow model ("models from code": nothing is
pickled). Its one artifact, ``model``, is the trial's directory as ``fersynth train`` saved it (safetensors
weights + config.json); fersynth itself must be installed where the model is loaded.

Input: uint8 images N x C x size x size, prepared as :func:`fersynth.modeling.data.model_input` prepares them
(grey or RGB, the training size). Output: one column of probabilities per class.

>>> model = mlflow.pyfunc.load_model("models:/fersynth-fer2013/1")  # doctest: +SKIP
>>> model.predict(images).idxmax(axis=1)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class FersynthClassifier(PythonModel):
    def load_context(self, context) -> None:
        from fersynth.modeling.trained import load_trained

        self.model, self.spec, self.classes = load_trained(Path(context.artifacts["model"]))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        import torch

        images = np.asarray(model_input, dtype=np.float32) / 255.0
        # its own softmax, not fersynth.modeling.trained.class_probabilities: MLflow runs this file as the model's
        # code, and whole input batches arrive already prepared
        with torch.no_grad():
            probabilities = torch.softmax(self.model(torch.from_numpy(images)).float(), 1).numpy()
        return pd.DataFrame(probabilities, columns=list(self.classes))


mlflow.models.set_model(FersynthClassifier())
