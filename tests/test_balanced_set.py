"""The balanced set on tiny demo sources whose demographics come from the demo's ground truth (standing in
for demographics-predict, which tests/test_demographics.py covers)."""

import json

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from fersynth.checks.validate import SuiteConfig, ValidationFailed, validate_variant
from fersynth.cli import main
from fersynth.generate.backends import BackendConfig, DemoBackendConfig
from fersynth.generate.balanced_set import BalancedSetConfig, build_balanced_set
from fersynth.generate.gate import GateConfig
from fersynth.ingest import ingest
from fersynth.variants.variant import Variant, VariantWriter
from tests.conftest import opinionated_classifier, with_true_demographics

SOURCES = ("fer2013", "nhfi", "affectnet")
FAST = BalancedSetConfig(per_cell=1, backend=BackendConfig(demo=DemoBackendConfig(size=64)))
NO_FACE_CHECK = GateConfig(detector="none")


@pytest.fixture(scope="module")
def sources(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("balanced_set")
    for name in SOURCES:
        ingest(name, tiny_demo / name, root / name)
        with_true_demographics(root / name, tiny_demo / "ground_truth" / f"{name}.csv")
    return root


@pytest.fixture(scope="module")
def built(sources):
    # the shared gate has an emotion classifier that rejects all but neutral faces: the balanced set, a test
    # set, must fill every cell anyway (its generated rows are gated on image quality only)
    shared_gate = GateConfig(detector="none", classifier=str(opinionated_classifier(sources / "gate")))
    report = build_balanced_set(
        {n: sources / n for n in SOURCES}, sources / "balanced_set", FAST, shared_gate, sources / "metrics"
    )
    return sources, report


def test_every_source_and_cell_holds_exactly_k_images(built):
    root, report = built
    manifest = Variant(root / "balanced_set").manifest
    cells = manifest.groupby(["dataset", "emotion", "gender", "age_group", "ethnicity"]).size()
    assert len(cells) == 3 * 280 and set(cells) == {1}
    assert set(manifest["split"]) == {"test"}
    assert report["final"]["total"]["total"] == 840 and report["still_short"] == {}
    assert report["deficit"]["total"]["total"] == int(manifest["synthetic"].sum())
    assert json.loads((root / "metrics" / "final.json").read_text()) == report["final"]
    assert json.loads((root / "metrics" / "gate.json").read_text()) == {"test": ["quality"]}
    reasons = pd.read_csv(root / "balanced_set" / "gate.csv")["reason"]
    assert not reasons.str.startswith("emotion:").any()


def test_an_emotion_classifier_for_the_balanced_set_is_refused():
    with pytest.raises(ValueError, match="test set"):
        BalancedSetConfig(gate={"classifier": "models/gate"})


def test_real_rows_come_from_test_splits_unchanged_and_generated_rows_match_each_format(built):
    root, _ = built
    balanced = Variant(root / "balanced_set")
    manifest = balanced.manifest
    real = manifest[~manifest["synthetic"]]
    assert len(real) > 0
    for name in SOURCES:
        source = Variant(root / name)
        test_bytes = {r["key"]: d for r, d in source.iter_bytes(source.manifest.query("split == 'test'"))}
        mine = real[real["dataset"] == name]
        for row, data in balanced.iter_bytes(mine):
            assert test_bytes[row["key"].removeprefix(f"{name}/")] == data
    formats = manifest[manifest["synthetic"]].groupby("dataset")[["width", "mode"]].agg(set)
    assert formats.loc["fer2013"].tolist() == [{48}, {"L"}]
    assert formats.loc["nhfi"].tolist() == [{224}, {"L"}]
    assert formats.loc["affectnet"].tolist() == [{224}, {"RGB"}]


def test_the_suite_passes_and_catches_a_leaked_picture(built, tmp_path):
    root, _ = built
    suite = SuiteConfig(
        splits=("test",),
        balanced_cells=("dataset", "emotion", "gender", "age_group", "ethnicity"),
        cell_count=1,
        not_in=tuple(str(root / n) for n in SOURCES),
    )
    summary = validate_variant(root / "balanced_set", suite, tmp_path / "q.json", tmp_path / "docs")
    assert summary["success"]
    # a training variant that holds one balanced-set picture in its train split
    balanced = Variant(root / "balanced_set")
    leaked_row, leaked_data = next(balanced.iter_bytes(balanced.manifest.head(1)))
    with VariantWriter(tmp_path / "leaky") as writer:
        row = leaked_row.copy()
        row["split"] = "train"
        writer.copy(row, leaked_data)
        writer.commit()
    leaky = SuiteConfig(**{**suite.__dict__, "not_in": (*suite.not_in, str(tmp_path / "leaky"))})
    with pytest.raises(ValidationFailed):
        validate_variant(root / "balanced_set", leaky, tmp_path / "q2.json", tmp_path / "docs2")
    failed = [
        r for b in json.loads((tmp_path / "q2.json").read_text())["batches"].values() for r in b if not r["success"]
    ]
    assert [r["expectation"].split("(")[0] for r in failed] == ["expect_column_values_to_not_be_in_set"]


def test_the_cli_derives_not_in_from_params_and_fails_on_a_leak(built, tmp_path, monkeypatch):
    root, _ = built
    balanced = Variant(root / "balanced_set")
    leaked_row, leaked_data = next(balanced.iter_bytes(balanced.manifest.head(1)))
    with VariantWriter(tmp_path / "leaky") as writer:
        row = leaked_row.copy()
        row["split"] = "val"
        writer.copy(row, leaked_data)
        writer.commit()
    for name in SOURCES:  # the ingested sources, where balanced_set.datasets says they are
        (tmp_path / "data" / "original").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "original" / name).symlink_to(root / name)
    suite = {"splits": ["test"], "min_per_class": 1, "derive_not_in": True, "not_in": []}
    params = {
        "balanced_set_suite": suite,
        "balanced_set": {"datasets": list(SOURCES)},
        "train": {"leaky_model": {"variants": [str(tmp_path / "leaky")]}},
        "evaluate": {"test_sets": {"balanced_set": str(root / "balanced_set")}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    arguments = [str(root / "balanced_set"), "--suite", "balanced_set", "--section", "balanced_set_suite"]
    result = CliRunner().invoke(main, ["validate", *arguments, "--metrics", "q.json", "--docs", "docs"])
    assert result.exit_code == 1 and "validation failed" in result.output
    summary = json.loads((tmp_path / "q.json").read_text())
    assert set(summary["not_in"]) == {*(f"data/original/{n}" for n in SOURCES), str(tmp_path / "leaky")}
    failed = [r["expectation"] for b in summary["batches"].values() for r in b if not r["success"]]
    assert [f.split("(")[0] for f in failed] == ["expect_column_values_to_not_be_in_set"]


def test_without_generation_the_deficit_is_reported_not_padded(sources, tmp_path):
    config = BalancedSetConfig(per_cell=1, generate=False)
    report = build_balanced_set({n: sources / n for n in SOURCES}, tmp_path / "short", config, NO_FACE_CHECK)
    manifest = Variant(tmp_path / "short").manifest
    assert not manifest["synthetic"].any()
    missing = sum(len(cells) for cells in report["still_short"].values())
    assert missing == report["deficit"]["total"]["total"] == 840 - len(manifest)
    assert pd.Series(report["deficit"]["nhfi"]).drop("total").sum() == report["deficit"]["nhfi"]["total"]
