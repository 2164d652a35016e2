"""A stage's quarantine list: every input it refused, with the reason and a category, so that
``kept + quarantined == read`` can be checked and nothing is dropped in silence. Sources and reasons are stored
as printable UTF-8 (a file name that is not UTF-8 or holds control characters cannot break the CSV)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # object reprs in library messages: not deterministic


def printable(text: object) -> str:
    """``text`` as valid UTF-8 for CSV and parquet: a file name that is not UTF-8 (Python keeps its bytes
    as surrogates) shows its bytes as ``\\xNN`` escapes, and so do control characters."""
    text = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)  # a lone \r splits a CSV row


@dataclass
class Quarantine:
    """Inputs a stage refused, each with a reason. ``category`` is ``bad_input``, ``rule`` (a
    documented drop such as AffectNet's non-emotion codes) or ``duplicate``."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, source: str, reason: str, category: str = "bad_input") -> None:
        self.rows.append((printable(source), _ADDRESS.sub("", printable(reason)), category))

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        return dict(Counter(category for _, _, category in self.rows))

    def reasons(self) -> dict[str, int]:
        return dict(Counter(reason.split(":")[0] for _, reason, _ in self.rows))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["source", "reason", "category"])
