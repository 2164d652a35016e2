import json

import mlflow
import numpy as np
import pytest
from PIL import Image

from fersynth.demographics.predict import agr_predict
from fersynth.demographics.train import AgrConfig, agr_train, load_agr, predict
from fersynth.ingest import ingest
from fersynth.labels import AGE_GROUPS, ETHNICITIES, GENDERS
from fersynth.variant import Variant

TINY = AgrConfig(input_size=64, widths=(4, 4, 8, 8, 8, 8), epochs=2, batch_size=16)


@pytest.fixture
def trained(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # MLflow store under the (temporary) repo root
    ingest("utkface", tiny_demo / "utkface", tmp_path / "utkface")
    metrics = agr_train(tmp_path / "utkface", tmp_path / "agr", TINY, tmp_path / "agr.json")
    return tmp_path, metrics


def test_training_saves_reloadable_weights_and_logs_a_run(trained):
    root, metrics = trained
    assert set(metrics["test"]) == {"gender_accuracy", "race_accuracy", "age_mae", "age_group_accuracy"}
    assert json.loads((root / "agr.json").read_text()) == metrics
    assert (root / "agr" / "model.safetensors").exists()
    model, config = load_agr(root / "agr")
    assert config == TINY
    variant = Variant(root / "utkface")
    images = variant.load_array(variant.manifest.head(5), config.input_size, "RGB")
    again, _ = load_agr(root / "agr")
    np.testing.assert_allclose(predict(model, images)["age"], predict(again, images)["age"], rtol=1e-6)
    runs = mlflow.search_runs(experiment_names=["fersynth"], filter_string="tags.`fersynth.stage` = 'agr-train'")
    assert len(runs) == 1 and "metrics.test_gender_accuracy" in runs.columns


def test_predict_fills_demographics_and_keeps_images(trained, tiny_demo):
    root, _ = trained
    ingest("nhfi", tiny_demo / "nhfi", root / "nhfi")
    report = agr_predict(root / "nhfi", root / "agr", root / "out", root / "plot.png", tiny_demo / "ground_truth")
    before, after = Variant(root / "nhfi"), Variant(root / "out")
    manifest = after.manifest
    assert len(manifest) == len(before.manifest) == report["images"]
    assert set(manifest["gender"]) <= set(GENDERS) and set(manifest["ethnicity"]) <= set(ETHNICITIES)
    assert set(manifest["age_group"]) <= set(AGE_GROUPS)
    assert manifest["gender_confidence"].between(0.5, 1.0).all()
    assert manifest["ethnicity_confidence"].between(0.2, 1.0).all()
    assert {r["key"]: d for r, d in after.iter_bytes()} == {r["key"]: d for r, d in before.iter_bytes()}
    assert report["against_ground_truth"]["images"] == len(manifest)
    assert Image.open(root / "plot.png").size[0] > 500


def test_too_small_input_for_six_blocks_fails_fast():
    with pytest.raises(ValueError, match="too small"):
        AgrConfig(input_size=32)
