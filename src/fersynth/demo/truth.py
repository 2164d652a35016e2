"""Reading the demo's ground truth (written by ``fersynth demo`` beside the native files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_ground_truth(path: Path) -> pd.DataFrame:
    """One row per native ``source`` identifier (a duplicated picture's second copy is dropped)."""
    return pd.read_csv(path).drop_duplicates("source").set_index("source")
