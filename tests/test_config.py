"""Where a section lives (params.yaml or configs/<section>.yaml), train.defaults, the refusals, and build's
type checks (the ranges of each section, and the fuzz of them all: tests/test_params.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from fersynth.annotate.autolabel import AutolabelConfig
from fersynth.annotate.calibrate import CalibrateConfig
from fersynth.checks.validate import SuiteConfig
from fersynth.compare.config import CompareConfig
from fersynth.config import build, load_params, raw_sections, section, write_sections
from fersynth.errors import ParamsError
from fersynth.evaluate.evaluate import EvaluateConfig
from fersynth.generate.artificial import ArtificialConfig
from fersynth.generate.balanced_set import BalancedSetConfig
from fersynth.generate.gate import GateConfig
from fersynth.generate.smote import SmoteConfig
from fersynth.ingest.common import IngestConfig
from fersynth.ingest.merge import MergeConfig
from fersynth.train.recipe import TrainConfig
from tests.conftest import dvc_stages

ROOT = Path(__file__).resolve().parents[1]


def _project(root: Path, params: dict, configs: dict[str, object]) -> Path:
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "configs").mkdir()
    for name, body in configs.items():
        (root / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(body))
    return root / "params.yaml"


def test_a_configs_file_is_its_section_and_train_defaults_merge_under_every_experiment(tmp_path):
    path = _project(
        tmp_path,
        {
            "train": {
                "defaults": {"epochs": 15, "seed": 0, "input": {"size": 48, "channels": 1}},
                "fer2013": {"variants": ["data/original/fer2013"]},
                "nhfi": {"variants": ["data/relabelled/nhfi"], "input": {"channels": 3}, "epochs": 30},
            }
        },
        {"gate": {"blur_below": 15.0}, "smote": None},  # an empty file is an empty section (its defaults)
    )
    params = load_params(path)
    assert section(params, "gate") == {"blur_below": 15.0} and section(params, "smote") == {}
    assert set(params["train"]) == {"fer2013", "nhfi"}  # `defaults` is no experiment
    assert params["train"]["fer2013"] == {
        "epochs": 15, "seed": 0, "input": {"size": 48, "channels": 1}, "variants": ["data/original/fer2013"],
    }  # fmt: skip
    # the experiment wins, key by key inside a mapping
    assert params["train"]["nhfi"]["input"] == {"size": 48, "channels": 3} and params["train"]["nhfi"]["epochs"] == 30


def test_raw_sections_and_write_sections_keep_each_section_where_it_lives(tmp_path):
    path = _project(tmp_path, {"train": {"defaults": {"epochs": 15}, "a": {}}}, {"gate": {"blur_below": 15.0}})
    raw = raw_sections(path)
    assert raw["train"]["defaults"] == {"epochs": 15}  # not merged: what a test or benchmark edits
    raw["train"]["defaults"]["epochs"] = 1
    raw["gate"]["blur_below"] = 0.0
    write_sections(path, raw)
    assert yaml.safe_load((tmp_path / "configs" / "gate.yaml").read_text()) == {"blur_below": 0.0}
    assert "gate" not in yaml.safe_load(path.read_text())
    assert load_params(path)["train"]["a"] == {"epochs": 1}


def test_a_section_in_both_places_a_bad_file_or_a_bad_default_is_a_one_line_error(tmp_path):
    path = _project(tmp_path, {"gate": {"blur_below": 1.0}}, {"gate": {"blur_below": 2.0}})
    with pytest.raises(ParamsError, match=r"'gate' is in both params.yaml and configs/gate.yaml"):
        load_params(path)
    (tmp_path / "configs" / "gate.yaml").unlink()
    os.mkfifo(tmp_path / "configs" / "fifo.yaml")  # would block a plain read forever
    with pytest.raises(ParamsError, match="not a regular file"):
        load_params(path)
    (tmp_path / "configs" / "fifo.yaml").unlink()
    with open(tmp_path / "configs" / "huge.yaml", "wb") as sparse:  # 1 GB, no disk: refused before reading
        sparse.truncate(1 << 30)
    with pytest.raises(ParamsError, match="params files are at most"):
        load_params(path)
    (tmp_path / "configs" / "huge.yaml").unlink()
    path.write_text(yaml.safe_dump({"train": {"defaults": [1, 2], "a": {}}}))
    with pytest.raises(ParamsError, match="train.defaults must be a mapping"):
        load_params(path)
    path.write_text(yaml.safe_dump({"train": {"defaults": {}, "a": 3}}))
    with pytest.raises(ParamsError, match="train.a must be a mapping"):
        load_params(path)
    with pytest.raises(ParamsError, match=r"no params section 'nosuch' \(params.yaml or configs/\)"):
        section({"gate": {}}, "nosuch")


def test_the_project_keeps_each_section_in_one_place_and_every_configs_file_is_a_stage_dependency():
    raw, params = raw_sections(ROOT / "params.yaml"), load_params(ROOT / "params.yaml")
    assert set(yaml.safe_load((ROOT / "params.yaml").read_text())) == {
        "runtime",
        "ingest",
        "train",
        "evaluate",
        "compare",
    }
    configs = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert set(configs) | {"runtime", "ingest", "train", "evaluate", "compare"} == set(raw) == set(params)
    stages = dvc_stages(ROOT)
    deps = {d for stage in stages.values() for d in stage["deps"]}
    assert {f"configs/{name}.yaml" for name in configs} <= deps  # a configs file nothing depends on checks nothing
    declared = {p.split(".")[0] for stage in stages.values() for p in stage.get("params", [])}
    assert not declared & set(configs), "a configs section declared as a params.yaml param"
    # one training stage per experiment (`train@<experiment>`; `train-<experiment>` where it reads several variants,
    # which a foreach item cannot list): it depends on the recipe, its own experiment and exactly its variants
    training = {name: s for name, s in stages.items() if s["cmd"].split()[:2] == ["fersynth", "train"]}
    assert sorted(s["cmd"].split()[2] for s in training.values()) == sorted(params["train"])
    for name, stage in training.items():
        experiment = stage["cmd"].split()[2]
        assert name in (f"train@{experiment}", f"train-{experiment}"), name
        assert {"train.defaults", f"train.{experiment}"} <= set(stage["params"]), name
        assert {d for d in stage["deps"] if d.startswith("data/")} == set(params["train"][experiment]["variants"]), name


WRONG_TYPES = [  # (class, values, the one-line error): what YAML lets through and the field's type does not
    (AutolabelConfig, {"ratio": "1.0"}, "AutolabelConfig.ratio must be a finite number, not '1.0'"),
    (AutolabelConfig, {"min_confidence": "0.5"}, "AutolabelConfig.min_confidence must be a finite number"),
    (AutolabelConfig, {"seed": "abc"}, "AutolabelConfig.seed must be a whole number, not 'abc'"),
    (AutolabelConfig, {"ratio": float("nan")}, "AutolabelConfig.ratio must be a finite number, not nan"),
    (AutolabelConfig, {"model": 5}, "AutolabelConfig.model must be a string, not 5"),
    (CalibrateConfig, {"batch_size": True}, "CalibrateConfig.batch_size must be a whole number, not True"),
    (TrainConfig, {"epochs": 2.0}, "TrainConfig.epochs must be a whole number, not 2.0"),
    (TrainConfig, {"mixed_precision": 1}, "TrainConfig.mixed_precision must be true or false, not 1"),
    (TrainConfig, {"input": {"size": "48"}}, "TrainConfig.input.size must be a whole number, not '48'"),
    (IngestConfig, {"fractions": [0.8, "0.1", 0.1]}, "IngestConfig.fractions[1] must be a finite number"),
    (IngestConfig, {"fractions": [0.5, 0.5]}, "IngestConfig.fractions must be a list of 3 items"),
    (SmoteConfig, {"augment": [30]}, "SmoteConfig.augment must be a mapping of ImageGeneratorConfig parameters"),
    (SuiteConfig, {"max_per_class": "5"}, "SuiteConfig.max_per_class must be a whole number or null, not '5'"),
    (SuiteConfig, {"splits": "train"}, "SuiteConfig.splits must be a list (each a string), not 'train'"),
    (CompareConfig, {"pairs": {"a": {"baseline": 3}}}, "CompareConfig.pairs.a.baseline must be a string, not 3"),
    (MergeConfig, {"per_class_cap": {"affectnet": 3.5}}, "MergeConfig.per_class_cap.affectnet must be a whole"),
    (EvaluateConfig, {"models": {"a": None}}, "EvaluateConfig.models.a must be a string, not None"),
    (GateConfig, {"detector": None}, "GateConfig.detector must be a string, not None"),
    (BalancedSetConfig, {"gate": {"blur_below": "x"}}, "balanced_set.gate.blur_below must be a finite number"),
    (BalancedSetConfig, {"gate": {"blur": 1.0}}, "balanced_set.gate: unknown parameter(s) ['blur']"),
    (ArtificialConfig, {"prompts": {"age_words": {"old": 3}}}, "ArtificialConfig.prompts.age_words.old must be a"),
]


@pytest.mark.parametrize("cls, values, message", WRONG_TYPES, ids=[m.split(" ")[0] for _, _, m in WRONG_TYPES])
def test_build_checks_each_value_against_its_field_type_and_says_which_in_one_line(cls, values, message):
    with pytest.raises(ParamsError) as refused:
        build(cls, values)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_build_takes_what_the_types_allow():
    assert build(AutolabelConfig, {"ratio": 2}).ratio == 2  # a whole number is a float
    assert build(IngestConfig, {"fractions": [1, 0, 0]}).fractions == (1, 0, 0)
    assert build(SuiteConfig, {"max_per_class": None, "splits": ["train"]}).splits == ("train",)
    pair = build(CompareConfig, {"pairs": {"a": {"baseline": "b", "test_sets": ["t"]}}}).pairs["a"]
    assert (pair.baseline, pair.test_sets) == ("b", ("t",))
