"""Figures shared by training (logged to MLflow) and evaluation: a row-normalised confusion matrix and the
models x test sets accuracy heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fersynth.atomic import atomic_path
from fersynth.modeling.metrics import normalised_confusion


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(labels, predicted, classes, title: str):
    plt = _pyplot()
    matrix = normalised_confusion(labels, predicted, len(classes))
    fig, axis = plt.subplots(figsize=(5, 4.5))
    axis.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    axis.set_title(title)
    fig.tight_layout()
    return fig


def heatmap_figure(matrix: dict[str, dict[str, float | None]], title: str):
    plt = _pyplot()
    models = list(matrix)
    tests = sorted({t for row in matrix.values() for t in row})
    values = np.array([[np.nan if matrix[m].get(t) is None else matrix[m][t] for t in tests] for m in models])
    fig, axis = plt.subplots(figsize=(1.2 * len(tests) + 2, 0.6 * len(models) + 1.5))
    axis.imshow(values, vmin=0, vmax=1, cmap="viridis")
    axis.set_xticks(range(len(tests)), tests, rotation=30, ha="right")
    axis.set_yticks(range(len(models)), models)
    for i in range(len(models)):
        for j in range(len(tests)):
            if not np.isnan(values[i, j]):
                axis.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color="white", fontsize=8)
    axis.set_title(title)
    fig.tight_layout()
    return fig


def save_png(fig, path: Path) -> None:
    """Write a figure atomically, without a timestamp or software tag (same figure, same bytes)."""
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    _pyplot().close(fig)


def close(fig) -> None:
    _pyplot().close(fig)
