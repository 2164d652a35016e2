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
import math
import stat
import types
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


SEED_MAX = 2**32 - 1  # numpy's RandomState and scikit-learn's random_state refuse larger seeds


def at_least(where: str, minimum: float, **values: float | tuple) -> None:
    """The range rule of a config's ``__post_init__`` in one line: a ``ValueError`` naming the first of
    ``values`` (each item of a tuple) that is not >= ``minimum``; NaN never is.

    >>> at_least("model", 1, epochs=3, channels=(16, 0))
    Traceback (most recent call last):
    ...
    ValueError: model.channels[1] must be >= 1, not 0
    """
    for name, value in _items(values):
        if not value >= minimum:
            raise ValueError(f"{dotted(where, name)} must be >= {minimum}, not {value!r}")


def above(where: str, bound: float, **values: float | tuple) -> None:
    """As :func:`at_least`, for values that must be greater than ``bound`` (a rate, a ratio)."""
    for name, value in _items(values):
        if not value > bound:
            raise ValueError(f"{dotted(where, name)} must be > {bound}, not {value!r}")


def within(where: str, low: float, high: float, **values: float | tuple) -> None:
    """As :func:`at_least`, for values that must lie in ``[low, high]`` (a probability, a grey level)."""
    for name, value in _items(values):
        if not low <= value <= high:
            raise ValueError(f"{dotted(where, name)} must be within [{low}, {high}], not {value!r}")


def check_seeds(where: str, **values: int) -> None:
    """Seeds are whole numbers in [0, :data:`SEED_MAX`]: every random generator the stages use takes them."""
    within(where, 0, SEED_MAX, **values)


def dotted(where: str, key: Any) -> str:
    """``where.key``, or ``where['key']`` for a key that is not one plain word (a mapping's key is the user's:
    a newline in it must not break the one-line error).

    >>> dotted("merge.per_class_cap", "affectnet"), dotted("merge.per_class_cap", "a b\\n")
    ('merge.per_class_cap.affectnet', "merge.per_class_cap['a b\\\\n']")
    """
    plain = isinstance(key, str) and key.isprintable() and key != "" and not any(c.isspace() for c in key)
    return f"{where}.{key}" if plain else f"{where}[{key!r}]"


def _items(values: dict) -> list[tuple[str, Any]]:
    return [
        (f"{name}[{k}]", item) if isinstance(value, tuple) else (name, value)
        for name, value in values.items()
        for k, item in (enumerate(value) if isinstance(value, tuple) else [(0, value)])
    ]


def build(cls: type[T], values: Mapping[str, Any] | None, where: str | None = None) -> T:
    """Instantiate dataclass ``cls`` from ``values``, each value checked against its field's type hint first
    (:func:`typed`): params are typed once, here, for every section, so that ``ratio: "1.0"`` or
    ``batch_size: true`` stop before any work instead of deep in a library. Lists become tuples, mappings
    nested dataclasses; an unknown key, a wrong type or a value ``__post_init__`` refuses raises
    :class:`ParamsError` naming ``where`` (default: the class) and the field.

    >>> from fersynth.ingest.common import IngestConfig
    >>> build(IngestConfig, {"seed": 1, "fractions": [0.8, 0.1, 0.1]}).fractions
    (0.8, 0.1, 0.1)
    >>> build(IngestConfig, {"seed": "1"})
    Traceback (most recent call last):
    ...
    fersynth.errors.ParamsError: IngestConfig.seed must be a whole number, not '1'
    """
    where = where or cls.__name__
    if values is not None and not isinstance(values, Mapping):
        raise ParamsError(f"{where} must be a mapping of parameters, not {_shown(values)}")
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - fields
    if unknown:
        raise ParamsError(f"{where}: unknown parameter(s) {sorted(map(str, unknown))}; known: {sorted(fields)}")
    kwargs = {name: typed(hints[name], value, f"{where}.{name}") for name, value in values.items()}
    try:
        return cls(**kwargs)
    except ParamsError:
        raise
    except (ValueError, TypeError) as error:  # __post_init__ checks
        raise ParamsError(f"{where}: {error}") from error


def typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` as field type ``hint`` takes it, or a :class:`ParamsError` saying what ``where`` must be.
    Strict where YAML would let a slip through: ``true`` is no number, ``"1.0"`` no float, a float no
    whole number, NaN and infinity no number at all; an int is a float. Lists become tuples (``tuple[T, ...]``
    or a fixed ``tuple[A, B]``), mappings nested dataclasses (built with :func:`build`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _one_of(hint, args, value, where)
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _wrong(where, hint, value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return build(hint, value, where)
        raise _wrong(where, hint, value)
    if hint is tuple or origin is tuple:
        return _tuple(hint, args, value, where)
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _wrong(where, hint, value)
        if not args:
            return value
        return {typed(args[0], k, f"{where} key"): typed(args[1], v, dotted(where, k)) for k, v in value.items()}
    if _is_scalar(hint, value):
        return value
    raise _wrong(where, hint, value)


def _is_scalar(hint: Any, value: Any) -> bool:
    if hint is bool or isinstance(value, bool):
        return hint is bool and isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and math.isfinite(value)
    if hint is int or hint is str:
        return isinstance(value, hint)
    if not isinstance(hint, type):
        raise TypeError(f"build cannot check type hint {hint!r}")  # a config that needs a new case here
    return isinstance(value, hint)


def _one_of(hint: Any, args: tuple, value: Any, where: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise _wrong(where, hint, value)
    for option in args:
        if option is not type(None):
            try:
                return typed(option, value, where)
            except ParamsError:
                continue
    raise _wrong(where, hint, value)


def _tuple(hint: Any, args: tuple, value: Any, where: str) -> tuple:
    if not isinstance(value, list | tuple):
        raise _wrong(where, hint, value)
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(typed(args[0], v, f"{where}[{k}]") for k, v in enumerate(value))
    if len(value) != len(args):
        raise _wrong(where, hint, value)
    return tuple(typed(a, v, f"{where}[{k}]") for k, (a, v) in enumerate(zip(args, value, strict=True)))


def _wrong(where: str, hint: Any, value: Any) -> ParamsError:
    return ParamsError(f"{where} must be {described(hint)}, not {_shown(value)}")


def described(hint: Any) -> str:
    """A type hint in words, as the error for a wrong value says it.

    >>> described(tuple[int, str])
    'a list of 2 items (a whole number, a string)'
    >>> described(dict[str, float] | None)
    'a mapping (a string -> a finite number) or null'
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else described(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} parameters"
    if hint is tuple or origin is tuple:
        if not args:
            return "a list"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list (each {described(args[0])})"
        return f"a list of {len(args)} items ({', '.join(map(described, args))})"
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        return f"a mapping ({described(args[0])} -> {described(args[1])})" if args else "a mapping"
    words = {int: "a whole number", float: "a finite number", bool: "true or false", str: "a string"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
