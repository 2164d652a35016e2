"""The sanity floor: HOG features + logistic regression (scikit-image, scikit-learn) fitted on exactly the rows a
model trains on. A CNN that scores below it on a test set has not learned what a linear model on edge
histograms finds; ``evaluate`` shows the floor beside every model and flags such a model.

The floor is fitted in ``train`` (which knows the rows; stored as plain arrays in
:func:`fersynth.paths.floor_path`, no pickle) and scored in ``evaluate``. Its one choice, the inverse
regularisation ``C``, is picked on the validation rows from :data:`C_GRID` and fitted on train only, as the CNN.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fersynth.atomic import atomic_path
from fersynth.variants.files import read_input

MAX_FLOOR_BYTES = 64 * 2**20
C_GRID = (0.1,)  # on the demo's FER2013 every C from 0.003 to 1 gave the same validation accuracy (69.4%)
PIXELS_PER_CELL = 6  # at the demo's 48 px: 8 x 8 cells (the review's 79.5% on FER2013's demo test split)
ORIENTATIONS = 9


def hog_features(images: np.ndarray) -> np.ndarray:
    """HOG of uint8 N x C x H x W images (colour averaged to grey), one float32 row per image."""
    from skimage.feature import hog

    grey = images.astype(np.float32).mean(axis=1) / 255.0
    cell = (PIXELS_PER_CELL, PIXELS_PER_CELL)
    rows = [hog(g, orientations=ORIENTATIONS, pixels_per_cell=cell, cells_per_block=(2, 2)) for g in grey]
    return np.asarray(rows, dtype=np.float32).reshape(len(grey), -1)


@dataclass(frozen=True)
class Floor:
    """A fitted HOG + logistic-regression classifier, as arrays."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    c: float
    val_accuracy: float

    def predict(self, images: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Predicted labels of uint8 ``images``; ``features``: their :func:`hog_features`, when already known."""
        features = hog_features(images) if features is None else features
        return np.argmax(((features - self.mean) / self.scale) @ self.coef.T + self.intercept, axis=1)

    def save(self, path: Path) -> None:
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept,
                     c=self.c, val_accuracy=self.val_accuracy)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Floor | None:
        if not Path(path).exists():
            return None
        # from a DVC remote: a regular file of at most 64 MB (its arrays are kilobytes), read once
        with np.load(io.BytesIO(read_input(Path(path), MAX_FLOOR_BYTES, "floor")), allow_pickle=False) as saved:
            return cls(saved["mean"], saved["scale"], saved["coef"], saved["intercept"], float(saved["c"]),
                       float(saved["val_accuracy"]))  # fmt: skip


def fit_floor(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], n_classes: int) -> Floor:
    """Standardised HOG features, multinomial logistic regression; ``C`` chosen by validation accuracy (the
    first of equals), the fit on train only. Every class gets a row of weights, seen in train or not."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features, labels = hog_features(train[0]), np.asarray(train[1])
    scaler = StandardScaler().fit(features)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0).astype(np.float32)
    x = (features - scaler.mean_.astype(np.float32)) / scale
    val_x = (hog_features(val[0]) - scaler.mean_.astype(np.float32)) / scale if len(val[1]) else None
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000).fit(x, labels)
        accuracy = float(np.mean(model.predict(val_x) == np.asarray(val[1]))) if val_x is not None else 0.0
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
        if val_x is None:
            break
    accuracy, c, model = best
    coef = np.zeros((n_classes, x.shape[1]), np.float32)
    intercept = np.full(n_classes, -np.inf, np.float32)  # a class absent from train is never predicted
    seen = model.classes_.astype(int)
    if len(seen) == 2:  # scikit-learn keeps one row for two classes: class 1 against class 0
        coef[seen[1]], intercept[seen[1]] = model.coef_[0], model.intercept_[0]
        coef[seen[0]], intercept[seen[0]] = 0.0, 0.0
    else:
        coef[seen], intercept[seen] = model.coef_, model.intercept_
    return Floor(scaler.mean_.astype(np.float32), scale, coef, intercept, c, accuracy)
