"""Typed stage configs built from params sections; unknown keys, missing sections and bad values fail before
any work, as one-line :class:`~fersynth.errors.ParamsError`.

A section lives in one of two places. ``params.yaml`` holds what ``dvc exp show`` lists and ``dvc exp run -S``
varies: the training experiments (``train.defaults`` merged under each), the statistics, the test sets, the
ingest sources and the CPU pin. Every other stage's section is ``configs/<section>.yaml`` beside it, the
section's body at the file's top level, and a file dependency of the stages that read it: DVC re-runs them when
it changes, and ``dvc exp show`` gives it one column instead of one per leaf (DVC's pager is 1024 characters
wide and every column costs one; see docs/params.md)."""

from __future__ import annotations

import dataclasses
import stat
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fersynth.errors import ParamsError

T = TypeVar("T")

CONFIGS = "configs"  # beside params.yaml: one file per section, configs/<section>.yaml
MAX_BYTES = 4 << 20  # a params or config file larger than this is refused before it is read


def load_params(path: Path | None = None) -> dict:
    """Every section: ``path`` (or the project's ``params.yaml``, :func:`fersynth.paths.params_path`) and the
    ``configs/*.yaml`` beside it, with ``train.defaults`` merged under each training experiment.
    A missing or unreadable file, or a section defined twice, is a :class:`ParamsError`: defaults are never
    applied silently.

    >>> with_train_defaults({"train": {"defaults": {"epochs": 15, "input": {"size": 48, "channels": 1}},
    ...                                "nhfi": {"input": {"channels": 3}}}})["train"]
    {'nhfi': {'epochs': 15, 'input': {'size': 48, 'channels': 3}}}
    """
    from fersynth.paths import params_path

    path = Path(path) if path is not None else params_path()
    if not path.is_file():
        raise ParamsError(f"no params file at {path}; run from the project or pass --params FILE")
    return with_train_defaults(raw_sections(path))


def raw_sections(path: Path) -> dict:
    """Every section as written, ``train.defaults`` not merged: ``params.yaml`` at ``path`` and the
    ``configs/*.yaml`` beside it. With :func:`write_sections`, how a test or benchmark edits the params."""
    path = Path(path)
    params = _read_sections(path)
    for file in sorted((path.parent / CONFIGS).glob("*.yaml")):
        if file.stem in params:
            raise ParamsError(f"section '{file.stem}' is in both {path.name} and {CONFIGS}/{file.name}; keep one")
        params[file.stem] = _read_yaml(file) or {}
    return params


def write_sections(path: Path, params: Mapping) -> None:
    """Write ``params`` back: a section that has a ``configs/<section>.yaml`` beside ``path`` goes there,
    every other one into ``path`` (YAML comments are not kept)."""
    from fersynth.atomic import replace_project_file as write_text

    configs = Path(path).parent / CONFIGS
    top = {}
    for name, body in params.items():
        if (configs / f"{name}.yaml").is_file():
            write_text(configs / f"{name}.yaml", yaml.safe_dump(body, sort_keys=False))
        else:
            top[name] = body
    write_text(Path(path), yaml.safe_dump(top, sort_keys=False))


def with_train_defaults(params: dict) -> dict:
    """``params`` with ``train.defaults`` merged (dicts key by key) under every other ``train.<experiment>``,
    and the ``defaults`` entry itself gone: every consumer sees whole experiments."""
    train = params.get("train")
    if not isinstance(train, Mapping) or "defaults" not in train:
        return params
    defaults = train["defaults"] or {}
    if not isinstance(defaults, Mapping):
        raise ParamsError(f"params.yaml: train.defaults must be a mapping, got {defaults!r}")
    experiments = {}
    for name, spec in train.items():
        if name == "defaults":
            continue
        if spec is not None and not isinstance(spec, Mapping):
            raise ParamsError(f"params.yaml: train.{name} must be a mapping, got {spec!r}")
        experiments[name] = _merged(defaults, spec or {})
    return {**params, "train": experiments}


def _merged(base: Mapping, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merged(base[key], value) if isinstance(value, Mapping) and isinstance(base.get(key), Mapping) else value
        )
    return out


def _read_sections(path: Path) -> dict:
    params = _read_yaml(path)
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(params).__name__}")
    return dict(params)


def _read_yaml(path: Path) -> Any:
    """The YAML in ``path``, a regular file of at most :data:`MAX_BYTES` (checked before reading)."""
    try:
        info = path.stat()
    except OSError as error:
        raise ParamsError(f"cannot read {path}: {error.strerror}") from error
    if not stat.S_ISREG(info.st_mode):
        raise ParamsError(f"{path} is not a regular file")
    if info.st_size > MAX_BYTES:
        raise ParamsError(f"{path} is {info.st_size:,} bytes; params files are at most {MAX_BYTES:,}")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ParamsError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error


def section(params: Mapping, dotted: str, required: bool = True) -> dict:
    """The params section at ``dotted`` (``"train.fer2013"``). A missing name is a :class:`ParamsError`
    listing the names that exist at that level, unless ``required`` is false (then ``{}``). A section
    present but empty (``smote:``) gives the defaults, on purpose.

    >>> section({"train": {"fer2013": {"epochs": 2}}}, "train.fer2031")
    Traceback (most recent call last):
    ...
    fersynth.errors.ParamsError: no params section 'train.fer2031' (params.yaml or configs/); 'train' has: fer2013
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
            raise ParamsError(f"no params section '{dotted}' (params.yaml or {CONFIGS}/); {where}: {names}")
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
