"""Typed stage configs built from ``params.yaml`` sections; unknown keys fail before any work."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def load_params(path: Path) -> dict:
    """The whole ``params.yaml`` (empty when the file does not exist, so defaults apply)."""
    path = Path(path)
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def section(params: Mapping, dotted: str) -> dict:
    node: Any = params
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return dict(node or {})


def build(cls: type[T], values: Mapping[str, Any] | None) -> T:
    """Instantiate dataclass ``cls`` from ``values``: lists become tuples, nested dataclasses are built
    recursively, an unknown key raises ``ValueError`` naming it.

    >>> from fersynth.ingest.common import IngestConfig
    >>> build(IngestConfig, {"seed": 1, "fractions": [0.8, 0.1, 0.1]}).fractions
    (0.8, 0.1, 0.1)
    """
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown parameter(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
