"""Reading the demo's ground truth (written by ``fersynth demo`` beside the native files, handed to stages as
``--truth``): a regular CSV of bounded size, else a one-line error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fersynth.variants.files import MAX_CSV_BYTES, open_input


def read_truth_table(path: Path) -> pd.DataFrame:
    """The ground-truth CSV as it is, one row per line (``source, true_emotion, ...``)."""
    with open_input(Path(path), MAX_CSV_BYTES, "ground truth") as handle:
        return pd.read_csv(handle)


def read_ground_truth(path: Path) -> pd.DataFrame:
    """One row per native ``source`` identifier (a duplicated picture's second copy is dropped)."""
    return read_truth_table(path).drop_duplicates("source").set_index("source")
