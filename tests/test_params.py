"""Every params section, typed by one mechanism (:func:`fersynth.config.build`).

:data:`SECTIONS` says which config class the CLI builds each section of params.yaml and configs/ into; it must
cover the project's sections and agree with the CLI (src/fersynth/cli/). The project's own values build; a
hypothesis fuzz that puts a wrong value (another type, a negative or huge number, NaN, an empty string, a list, a
mapping, null) into any one place of any section gets a ``ParamsError`` (one line, exit 2), never another
exception, and a value of another kind than its field's type (a string for a number, ``true`` for a count, NaN)
never builds: it would reach the stage's work and fail there, or not at all. :data:`RANGES` holds a value of the
right type that each section's ``__post_init__`` refuses.
"""

import ast
import copy
import dataclasses
import math
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fersynth.annotate.autolabel import AutolabelConfig
from fersynth.annotate.calibrate import CalibrateConfig
from fersynth.annotate.demographics.predict import DemographicsPredictConfig
from fersynth.annotate.demographics.train import DemographicsConfig
from fersynth.annotate.filtering import FilterConfig
from fersynth.annotate.relabel import RelabelConfig
from fersynth.checks.validate import SuiteConfig
from fersynth.compare.config import CompareConfig
from fersynth.config import build, load_params, section
from fersynth.demo import DemoConfig
from fersynth.errors import ParamsError
from fersynth.evaluate.evaluate import EvaluateConfig
from fersynth.generate.artificial import ArtificialConfig
from fersynth.generate.augmented import AugmentedConfig
from fersynth.generate.balanced_set import BalancedSetConfig
from fersynth.generate.ddpm import DdpmSampleConfig, DdpmTrainConfig
from fersynth.generate.gate import GateConfig
from fersynth.generate.gate_classifier import GateTrainConfig
from fersynth.generate.smote import SmoteConfig
from fersynth.ingest.common import IngestConfig
from fersynth.ingest.merge import MergeConfig
from fersynth.runtime import RuntimeConfig
from fersynth.train.recipe import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = {  # params section (`*`: each key under it) -> the class the CLI builds it into
    "runtime": RuntimeConfig,
    "ingest": IngestConfig,
    "ingest.sources.*": IngestConfig,  # merged over `ingest`, as `fersynth ingest DATASET` does
    "train.*": TrainConfig,
    "evaluate": EvaluateConfig,
    "compare": CompareConfig,
    "autolabel": AutolabelConfig,
    "balanced_set": BalancedSetConfig,
    "balanced_set_suite": SuiteConfig,  # fersynth validate --section balanced_set_suite
    "calibrate": CalibrateConfig,
    "ddpm_sample": DdpmSampleConfig,
    "ddpm_train": DdpmTrainConfig,
    "demo": DemoConfig,
    "demographics": DemographicsConfig,
    "demographics_predict": DemographicsPredictConfig,
    "fer2013_rendered": AugmentedConfig,  # fersynth generate-augmented --section fer2013_rendered
    "fer2013_sdxl": AugmentedConfig,
    "filter": FilterConfig,
    "gate": GateConfig,
    "gate_train": GateTrainConfig,
    "merge": MergeConfig,
    "relabel": RelabelConfig,
    "sd_artificial": ArtificialConfig,
    "smote": SmoteConfig,
    "smote_only": SmoteConfig,  # fersynth smote --section smote_only
    "validate.suites.*": SuiteConfig,
}


def cli_sections(params: dict) -> list[tuple[str, type, dict]]:
    """(section, class, values) for every section of ``params``, the values as the CLI passes them to
    ``build``: ingest without its sources (and a source's options over it), a suite without its variant."""
    found = []
    for name, cls in SECTIONS.items():
        if not name.endswith(".*"):
            values = section(params, name)
            found.append((name, cls, {k: v for k, v in values.items() if not (name == "ingest" and k == "sources")}))
            continue
        for key, values in section(params, name[:-2]).items():
            values = dict(values or {})
            if name == "validate.suites.*":
                values.pop("variant", None)
            if name == "ingest.sources.*":
                base = {k: v for k, v in section(params, "ingest").items() if k != "sources"}
                options = {k: v for k, v in values.items() if k != "src"}
                values = base | {f"casme2_{k}" if key == "casme2" else k: v for k, v in options.items()}
            found.append((f"{name[:-2]}.{key}", cls, values))
    return found


def _completed(cls: type, values: dict) -> dict:
    """``values`` with every field the section leaves out at its default, as YAML would hold them: the fuzz
    reaches every field of every config, not only those the project sets."""
    return _plain(dataclasses.asdict(build(cls, values)))


def _plain(node):
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    return [_plain(item) for item in node] if isinstance(node, list | tuple) else node


PARAMS = load_params(ROOT / "params.yaml")
PROJECT = cli_sections(PARAMS)
COMPLETED = [(name, cls, _completed(cls, values)) for name, cls, values in PROJECT]


def test_the_registry_covers_every_section_of_the_project_and_agrees_with_the_cli():
    assert {name.split(".")[0] for name in SECTIONS} == set(PARAMS)
    built_by_cli = set()
    trees = [ast.parse(path.read_text()) for path in sorted((ROOT / "src" / "fersynth" / "cli").glob("*.py"))]
    for call in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "build" and len(call.args) == 2:
            cls, values = call.args
            if isinstance(values, ast.Call) and getattr(values.func, "id", None) == "section":
                name = values.args[1]
                if isinstance(name, ast.Constant):  # literal names; --section and f-strings are listed above
                    built_by_cli.add((name.value, cls.id))
    assert {("autolabel", "AutolabelConfig"), ("calibrate", "CalibrateConfig")} <= built_by_cli  # the parse works
    assert built_by_cli <= {(name, cls.__name__) for name, cls in SECTIONS.items()}


@pytest.mark.parametrize("name, cls, values", PROJECT, ids=[name for name, _, _ in PROJECT])
def test_every_section_of_the_project_builds_and_so_does_it_with_every_default_written_out(name, cls, values):
    assert build(cls, values) == build(cls, _completed(cls, values))


def _places(node, path=()) -> list[tuple]:
    """Every place in a section: each key of a mapping and each item of a list, at any depth."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [place for key, child in children for place in [(*path, key), *_places(child, (*path, key))]]


def _replaced(values: dict, place: tuple, value) -> dict:
    values = copy.deepcopy(values)
    parent = values
    for key in place[:-1]:
        parent = parent[key]
    parent[place[-1]] = value
    return values


WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, -1, 1, 2**32, 2**64, 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -0.5, 0.5, 1.5, 1e300]),
    st.text(max_size=6),
    st.sampled_from(["", "1.0", "abc", "none", "null", "all", "0"]),
    st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=2), st.floats()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(st.integers(-3, 3), st.text(max_size=2)), max_size=2),
)


# too_slow: a shared CI machine draws slowly at times; that is no failure of the params
@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_wrong_value_anywhere_in_any_section_is_a_params_error_never_a_traceback(data):
    name, cls, values = data.draw(st.sampled_from(COMPLETED), label="section")
    place = data.draw(st.sampled_from(_places(values)), label="place")
    wrong = data.draw(WRONG, label="value")
    try:
        build(cls, _replaced(values, place, wrong))
    except ParamsError as error:
        assert "\n" not in str(error).strip(), str(error)
    else:
        assert _kind(wrong) in _kinds_allowed(cls, place, values), f"{name}.{place}: {wrong!r} was taken"


def _kind(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "not a number"
    names = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}
    return names[type(value)]


def _kinds_allowed(cls, place: tuple, values: dict) -> set[str]:
    """The kinds of value ``place`` takes, by the type hints down to it; where they say nothing (a plain
    ``dict``, ``Any``), the kind of the project's own value there (an int where a float stands too)."""
    hint = cls
    for key in place:
        hint = _inner(hint, key)
        if hint is None:
            original = _kind(_at(values, place))
            return {original, "int"} if original == "float" else {original}
    return _hint_kinds(hint)


def _inner(hint, key):
    """The type hint of ``key`` inside a value of type ``hint``; None where ``hint`` does not say."""
    if dataclasses.is_dataclass(hint):
        return typing.get_type_hints(hint)[key]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        [option] = [a for a in args if a is not type(None)]
        return _inner(option, key)
    if origin is dict and args:
        return args[1]
    if origin is tuple and args:
        return args[0] if args[-1] is Ellipsis else args[key]
    return None


def _hint_kinds(hint) -> set[str]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*map(_hint_kinds, typing.get_args(hint)))
    hint = typing.get_origin(hint) or hint
    if dataclasses.is_dataclass(hint) or hint is dict:
        return {"mapping"}
    return {type(None): {"null"}, bool: {"bool"}, int: {"int"}, float: {"int", "float"}, str: {"str"}}.get(
        hint, {"list"} if hint is tuple else set()
    )


def _at(values, place: tuple):
    for key in place:
        values = values[key]
    return values


RANGES = [  # (class, values, the one-line error): the right type, a value the stage cannot use
    (AutolabelConfig, {"ratio": -1}, "autolabel.ratio must be > 0, not -1"),
    (AutolabelConfig, {"min_confidence": 5}, "autolabel.min_confidence must be within [0, 1], not 5"),
    (AutolabelConfig, {"seed": -1}, "autolabel.seed must be within [0, 4294967295], not -1"),
    (AutolabelConfig, {"model": ""}, "autolabel.model is empty"),
    (IngestConfig, {"shard_max_mb": 0}, "ingest.shard_max_mb must be >= 1, not 0"),
    (DemoConfig, {"fer2013_rows": -5}, "demo.fer2013_rows must be >= 0, not -5"),
    (DemoConfig, {"casme2_frames_per_clip": [8, 4]}, "demo.casme2_frames_per_clip is [fewest, most]"),
    (DemoConfig, {"nuisances": {"blur": 1.5}}, "demo.nuisances.blur must be within [0, 1], not 1.5"),
    (SuiteConfig, {"min_per_class": 5, "max_per_class": 2}, "suite.max_per_class must be >= 5, not 2"),
    (SmoteConfig, {"augment": {"zoom": 1.0}}, "smote.augment.zoom must be below 1"),
    (SmoteConfig, {"seed": 2**32}, "smote.seed must be within [0, 4294967295]"),
    (RelabelConfig, {"model": {"channels": [16, 0]}}, "model.channels[1] must be >= 1, not 0"),
    (RelabelConfig, {"model": {"size": 4}}, "model.size must be >= 8, not 4"),
    (RelabelConfig, {"model": {"learning_rate": 0}}, "model.learning_rate must be > 0, not 0"),
    (MergeConfig, {"per_class_cap": {"affectnet": 0}}, "merge.per_class_cap.affectnet must be >= 1, not 0"),
    (DemographicsConfig, {"batch_size": 0}, "demographics.batch_size must be >= 1, not 0"),
    (GateConfig, {"mtcnn_thresholds": [0.6, 0.7, 7]}, "gate.mtcnn_thresholds[2] must be within [0, 1], not 7"),
    (GateConfig, {"dark_below": 300.0}, "gate.dark_below must be within [0, 255], not 300.0"),
    (GateConfig, {"emotion_top_k": 0}, "gate.emotion_top_k must be >= 1, not 0"),
    (ArtificialConfig, {"max_attempts_per_image": 0}, "generation.max_attempts_per_image must be >= 1, not 0"),
    (ArtificialConfig, {"backend": {"demo": {"size": 0}}}, "backend.demo.size must be >= 8, not 0"),
    (ArtificialConfig, {"backend": {"diffusers": {"guidance": -1.0}}}, "diffusers.guidance must be >= 0"),
    (BalancedSetConfig, {"per_cell": 0}, "balanced_set.per_cell must be >= 1, not 0"),
    (DdpmTrainConfig, {"beta_schedule": "cosine"}, "ddpm_train.beta_schedule must be one of"),
    (DdpmTrainConfig, {"learning_rate": -0.1}, "ddpm_train.learning_rate must be > 0, not -0.1"),
    (DdpmSampleConfig, {"proportions": {"others": -1}}, "ddpm_sample.proportions.others must be >= 0, not -1"),
    (DdpmSampleConfig, {"test_fraction": 1.0}, "ddpm_sample.test_fraction must be within [0, 1)"),
    (TrainConfig, {"epochs": 0}, "train.epochs must be >= 1, not 0"),
    (TrainConfig, {"synthetic_ratio": -0.5}, "train.synthetic_ratio must be >= 0, not -0.5"),
    (TrainConfig, {"synthetic_per_class": -2}, "train.synthetic_per_class must be >= -1, not -2"),
    (TrainConfig, {"architecture": "resnet"}, "train.architecture must be one of"),
    (TrainConfig, {"device": "gpu"}, "train.device must be auto, cpu, cuda or cuda:N, not 'gpu'"),
    (TrainConfig, {"input": {"channels": 2}}, "input.channels must be 1 (grey) or 3 (RGB), not 2"),
    (TrainConfig, {"variants": []}, "train.variants is empty"),
    (EvaluateConfig, {"robustness": {"resolution": [0]}}, "evaluate.robustness.resolution[0] must be >= 1, not 0"),
    (CompareConfig, {"plan_effects": [0.02, -0.05]}, "compare.plan_effects[1] must be > 0, not -0.05"),
]


@pytest.mark.parametrize("cls, values, message", RANGES, ids=[m.split(" ")[0] for _, _, m in RANGES])
def test_values_out_of_range_are_one_line_params_errors(cls, values, message):
    with pytest.raises(ParamsError) as refused:
        build(cls, values)
    assert message in str(refused.value) and "\n" not in str(refused.value)
