"""Typed stage configs built from ``params.yaml`` sections; unknown keys, missing sections and bad values
fail before any work, as one-line :class:`~fersynth.errors.ParamsError`."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fersynth.errors import ParamsError

T = TypeVar("T")


def load_params(path: Path | None = None) -> dict:
    """The whole ``params.yaml``: ``path``, or the project's (:func:`fersynth.paths.params_path`).
    A missing or unreadable file is a :class:`ParamsError`: defaults are never applied silently."""
    from fersynth.paths import params_path

    path = Path(path) if path is not None else params_path()
    if not path.is_file():
        raise ParamsError(f"no params file at {path}; run from the project or pass --params FILE")
    try:
        params = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ParamsError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(params).__name__}")
    return dict(params)


def section(params: Mapping, dotted: str, required: bool = True) -> dict:
    """The params section at ``dotted`` (``"train.fer2013"``). A missing name is a :class:`ParamsError`
    listing the names that exist at that level, unless ``required`` is false (then ``{}``). A section
    present but empty (``smote:``) gives the defaults, on purpose.

    >>> section({"train": {"fer2013": {"epochs": 2}}}, "train.fer2031")
    Traceback (most recent call last):
    ...
    fersynth.errors.ParamsError: params.yaml has no section 'train.fer2031'; 'train' has: fer2013
    """
    node: Any = params
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if node is None:
            node = {}
        if not isinstance(node, Mapping):
            raise ParamsError(f"params.yaml: {'.'.join(parts[:depth])} must be a mapping, got {node!r}")
        if part not in node:
            if not required:
                return {}
            where = f"'{'.'.join(parts[:depth])}' has" if depth else "sections are"
            names = ", ".join(sorted(map(str, node))) or "(none)"
            raise ParamsError(f"params.yaml has no section '{dotted}'; {where}: {names}")
        node = node[part]
    if node is not None and not isinstance(node, Mapping):
        raise ParamsError(f"params.yaml: {dotted} must be a mapping, got {node!r}")
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
        raise ParamsError(f"{cls.__name__}: unknown parameter(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ParamsError:
        raise
    except (ValueError, TypeError) as error:  # __post_init__ checks and wrong value types
        raise ParamsError(f"{cls.__name__}: {error}") from error
