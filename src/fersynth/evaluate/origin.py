"""Which test rows are real and which generated: a test set mixing both (the balanced set) is scored on each
part apart by ``evaluate`` and ``compare``, since the mix is not "real faces"."""

from __future__ import annotations

import pandas as pd


def real_and_generated(rows: pd.DataFrame) -> dict[str, pd.Series]:
    """Masks of the real and the generated rows (a missing ``synthetic`` flag counts as real), or ``{}``
    unless the rows hold both."""
    if "synthetic" not in rows:
        return {}
    generated = rows["synthetic"].fillna(False).astype(bool)
    if generated.all() or not generated.any():
        return {}
    return {"real": ~generated, "generated": generated}
