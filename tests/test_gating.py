"""Checks that gate: every stage that reads a variant depends on that variant's Great Expectations suite,
so a failing suite stops ``dvc repro`` before anything reads the data. A structural check of the
project's dvc.yaml against params.yaml, and a tiny DVC project where a planted class imbalance stops the
pipeline at the validate stage."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from fersynth.config import load_params
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import VariantWriter
from tests.conftest import dvc_stages, image_bytes, validate_project

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stages():
    return dvc_stages(ROOT)


def suite_metrics(params: dict, stages: dict) -> dict[str, str]:
    """variant directory -> the metrics file of its suite: ``validate.suites.<name>.variant`` plus every
    other ``fersynth validate VARIANT`` stage (validate-balanced-set)."""
    suites = {spec["variant"]: f"metrics/quality/{name}.json" for name, spec in params["validate"]["suites"].items()}
    for stage in stages.values():
        words = stage["cmd"].split()
        if words[:2] == ["fersynth", "validate"]:
            [metrics] = [o for o in stage["outs"] if o.startswith("metrics/quality/")]
            assert suites.setdefault(words[2], metrics) == metrics, words[2]
    return suites


def read_variant(dep: str, suites: dict[str, str]) -> str | None:
    """The variant with a suite that ``dep`` is, or lies inside (``data/x/manifest.parquet``)."""
    path = Path(dep)
    return next((p.as_posix() for p in (path, *path.parents) if p.as_posix() in suites), None)


# Reads that need not wait for the variant's suite, and why. calibrate only compares its judges' training
# pictures with the balanced set's by pixel hash (a leakage refusal), and the balanced set's suite itself checks the
# balanced set against the calibrated variant: waiting for it would be a cycle.
HASH_ONLY_READS = {
    ("calibrate@fer2013_sdxl", "data/balanced_set"),
    ("autolabel", "data/balanced_set"),  # its labeler's pictures against hybrid's test set
}


def test_every_stage_that_reads_a_variant_depends_on_its_suite(stages):
    params = load_params(ROOT / "params.yaml")
    suites = suite_metrics(params, stages)
    assert "data/balanced_set" in suites and len(suites) == len(params["validate"]["suites"]) + 1
    missing = [
        f"{name}: reads {dep} but does not depend on {suites[variant]}"
        for name, stage in stages.items()
        for dep in stage["deps"]
        if (variant := read_variant(dep, suites))
        and suites[variant] not in stage["deps"]
        and suites[variant] not in stage["outs"]  # the suite's own stage
        and (name, dep) not in HASH_ONLY_READS
    ]
    assert not missing, "\n".join(missing)


def _toy_variant(path: Path, extra_happy_in_train: int) -> None:
    """One train image per basic-7 class and two test images, plus ``extra_happy_in_train`` more."""
    rows = [("train", emotion) for emotion in BASIC7] + [("test", "angry"), ("test", "sad")]
    rows += [("train", "happy")] * extra_happy_in_train
    with VariantWriter(path) as writer:
        for identity, (split, emotion) in enumerate(rows):
            data = image_bytes(emotion, identity=identity)
            key = f"{split}/{identity}.png"
            record = {"key": key, "source": key, "split": split, "emotion": emotion, "dataset": "toy"}
            record |= {"label": BASIC7.index(emotion), "label_space": "basic7"}
            writer.add(record, Image.open(io.BytesIO(data)), data)
        writer.commit()


def _mini_project(root: Path) -> None:
    """A DVC project with the real validate stage (its source-code deps dropped) and a consumer."""
    validate = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["validate"]
    validate["do"]["deps"] = [d for d in validate["do"]["deps"] if not d.startswith("src/")]
    consumer = {
        "cmd": "fersynth contact-sheet data/toy --out reports/sheets --all-rows --per-class 2",
        "deps": ["data/toy", "metrics/quality/toy.json"],  # without the suite's metrics, this ran first
        "outs": ["reports/sheets"],
    }
    suite = {"variant": "data/toy", "label_space": "basic7", "min_per_class": 1, "balanced_splits": ["train"]}
    validate_project(root, {"validate": validate, "contact-sheet": consumer}, {"toy": suite})


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("DVC_ROOT", None)
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_failing_suite_stops_the_pipeline_before_its_consumer_runs(tmp_path):
    assert _dvc(tmp_path, "init", "--no-scm", "-q").returncode == 0
    _mini_project(tmp_path)
    _toy_variant(tmp_path / "data" / "toy", extra_happy_in_train=3)  # happy: 4 train images, the others 1

    failed = _dvc(tmp_path, "repro")
    assert failed.returncode != 0
    assert "validate@toy" in failed.stderr + failed.stdout
    assert not (tmp_path / "reports" / "sheets").exists()  # the consumer never ran
    quality = json.loads((tmp_path / "metrics" / "quality" / "toy.json").read_text())
    assert not quality["success"]
    assert [r["success"] for r in quality["batches"]["balance_train"]] == [False, True]

    _toy_variant(tmp_path / "data" / "toy", extra_happy_in_train=0)  # balanced: the same pipeline goes through
    passed = _dvc(tmp_path, "repro")
    assert passed.returncode == 0, passed.stderr[-3000:]
    assert json.loads((tmp_path / "metrics" / "quality" / "toy.json").read_text())["success"]
    assert sorted(p.stem for p in (tmp_path / "reports" / "sheets").glob("*.png")) == sorted(BASIC7)
