import json

import mlflow
import pandas as pd
import pytest
import torch

from fersynth.generate.augmented import AugmentedConfig, generate_augmented
from fersynth.generate.gate import GateConfig
from fersynth.ingest import ingest
from fersynth.train.data import InputConfig
from fersynth.train.train import TrainConfig, load_trained, train, training_rows


@pytest.fixture(scope="module")
def workspace(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    mp = pytest.MonkeyPatch()
    mp.setenv("DVC_ROOT", str(root))
    ingest("fer2013", tiny_demo / "fer2013", root / "fer2013")
    generate_augmented(root / "fer2013", root / "aug", AugmentedConfig(per_class=4), GateConfig(detector="none"))
    yield root
    mp.undo()


def small(root, **overrides):
    values = {
        "variants": (str(root / "fer2013"),),
        "input": InputConfig(size=32),
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 3e-3,
    }
    return TrainConfig(**(values | overrides))


def test_validation_is_real_train_rows_only_and_synthetic_rows_are_capped(workspace):
    config = small(workspace, variants=(str(workspace / "aug"),), synthetic_per_class=2)
    rows, classes = training_rows(config)
    assert not rows["val"]["synthetic"].any() and not rows["test"]["synthetic"].any()
    assert set(rows["train"]["key"]).isdisjoint(rows["val"]["key"])
    generated = rows["train"][rows["train"]["synthetic"]]
    assert generated.groupby("label").size().max() <= 2 and len(generated) == 2 * len(classes)
    assert set(rows["test"]["split"]) == {"test"}


def test_a_cap_above_the_synthetic_count_trains_on_the_same_rows_in_the_same_order_as_no_cap(workspace):
    # a sweep over synthetic_per_class must not jump between "all" and "more than there are" from row order alone
    uncapped, _ = training_rows(small(workspace, variants=(str(workspace / "aug"),)))
    capped, _ = training_rows(small(workspace, variants=(str(workspace / "aug"),), synthetic_per_class=100))
    assert uncapped["train"]["synthetic"].sum() == 28
    assert list(uncapped["train"]["key"]) == list(capped["train"]["key"])


def test_synthetic_rows_are_capped_at_a_ratio_of_the_real_rows_per_class(workspace):
    config = small(workspace, variants=(str(workspace / "aug"),), synthetic_ratio=0.1)
    rows, _ = training_rows(config)
    real = rows["train"][~rows["train"]["synthetic"]].groupby("label").size()
    generated = rows["train"][rows["train"]["synthetic"]].groupby("label").size()
    assert len(generated) > 0
    for label, n in generated.items():
        assert n == min(4, int(real[label] * 0.1)), label  # 4 generated per class exist (the fixture)
    uncapped, _ = training_rows(small(workspace, variants=(str(workspace / "aug"),)))
    assert uncapped["train"]["synthetic"].sum() == 28 > rows["train"]["synthetic"].sum()


def test_a_set_too_small_to_stratify_still_splits(workspace):
    rows, classes = training_rows(small(workspace, validation_fraction=0.02))  # fewer val rows than classes
    assert 0 < len(rows["val"]) < len(classes)
    assert set(rows["train"]["key"]).isdisjoint(rows["val"]["key"])


def test_a_class_with_one_real_row_trains_and_is_left_out_of_validation(workspace, tmp_path):
    import shutil

    from fersynth.variant import Variant, VariantWriter

    source = Variant(workspace / "fer2013")
    train_rows = source.manifest.query("split == 'train'")
    rare = train_rows["label"].value_counts().index[-1]  # keep one face of the rarest class in train
    lone = train_rows[train_rows["label"] == rare].iloc[0]["key"]
    with VariantWriter(tmp_path / "rare") as writer:
        for row, data in source.iter_bytes():
            if row["label"] != rare or row["split"] != "train" or row["key"] == lone:
                writer.copy(row, data)
        writer.commit()
    rows, _ = training_rows(small(tmp_path, variants=(str(tmp_path / "rare"),)))
    assert lone in set(rows["train"]["key"]) and rare not in set(rows["val"]["label"])
    shutil.rmtree(tmp_path / "rare")


def test_training_logs_one_mlflow_run_and_saves_a_reloadable_best_checkpoint(workspace):
    metrics = train(small(workspace), workspace / "model", workspace / "metrics.json", run_name="baseline")
    assert json.loads((workspace / "metrics.json").read_text()) == metrics
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["best_val_accuracy"] == max(h["val_accuracy"] for h in metrics["history"])
    runs = mlflow.search_runs(experiment_names=["fersynth"], filter_string="attributes.run_name = 'baseline'")
    assert len(runs) == 1 and runs.iloc[0]["metrics.test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    history = mlflow.tracking.MlflowClient().get_metric_history(runs.iloc[0]["run_id"], "val_accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    model, config, classes = load_trained(workspace / "model")
    assert config == small(workspace) and len(classes) == 7
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    # the decoded-array cache was written once and reused
    assert len(list((workspace / ".cache" / "arrays").glob("*.npy"))) == 3


@pytest.mark.slow  # ~80 s: paper 001's CNN (512-channel blocks) for 10 epochs on CPU
def test_training_learns_the_demo_expressions(tmp_path, monkeypatch):
    from fersynth.demo import DemoConfig, make_demo

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    make_demo(DemoConfig(datasets=("fer2013",), fer2013_rows=700), tmp_path / "demo")  # the session demo is tiny
    ingest("fer2013", tmp_path / "demo" / "fer2013", tmp_path / "fer2013")
    config = small(tmp_path, epochs=12, batch_size=32, learning_rate=1e-3)
    rows, _ = training_rows(config)
    majority = rows["test"]["label"].value_counts(normalize=True).max()
    metrics = train(config, tmp_path / "model", run_name="learns")
    # measured at seeds 0-3: 0.56, 0.52, 0.64, 0.63 vs majority 0.31 on 88 test images (lr 3e-3: seed 0 stalls at 0.30)
    assert metrics["test_accuracy"] > majority + 0.1


def test_trials_train_one_model_per_seed_and_report_their_mean(workspace):
    from fersynth.train.train import trial_dirs

    config = small(workspace, epochs=1, trials=2, seed=3)
    metrics = train(config, workspace / "trials", run_name="trials", history_path=workspace / "history.csv")
    assert [d.name for d in trial_dirs(workspace / "trials")] == ["seed-3", "seed-4"]
    assert [t["seed"] for t in metrics["trials"]] == [3, 4]
    accuracies = [t["test_accuracy"] for t in metrics["trials"]]
    assert metrics["test_accuracy"] == pytest.approx(sum(accuracies) / 2, abs=1e-4)
    low, high = metrics["test_accuracy_ci95"]
    assert low <= min(accuracies) and high >= max(accuracies)
    runs = mlflow.search_runs(experiment_names=["fersynth"], filter_string="attributes.run_name LIKE 'trials/%'")
    assert sorted(runs["tags.mlflow.runName"]) == ["trials/seed-3", "trials/seed-4"]
    states = [load_trained(d)[0].state_dict() for d in trial_dirs(workspace / "trials")]
    assert not torch.equal(states[0]["head.1.weight"], states[1]["head.1.weight"])  # different seeds, models
    history = pd.read_csv(workspace / "history.csv")
    assert list(history["epoch"]) == [1] and {"train_loss", "val_loss", "val_accuracy"} <= set(history.columns)


def test_cli_trains_the_experiment_named_in_params(workspace, monkeypatch):
    import yaml
    from click.testing import CliRunner

    from fersynth.cli import main

    monkeypatch.chdir(workspace)
    params = {"train": {"tiny": {"variants": [str(workspace / "fer2013")], "epochs": 1, "input": {"size": 32}}}}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["train", "tiny"])
    assert result.exit_code == 0, result.output
    saved = json.loads((workspace / "metrics" / "train" / "tiny.json").read_text())
    assert len(saved["history"]) == 1 and (workspace / "models" / "tiny" / "model.safetensors").exists()


def test_an_all_synthetic_variant_validates_on_its_own_rows(tmp_path):
    from fersynth.generate.artificial import ArtificialConfig, all_cells, generate_artificial

    config = ArtificialConfig(per_cell={"train": 2, "test": 1})
    generate_artificial(tmp_path / "art", config, GateConfig(detector="none"), cells=all_cells()[::10])
    rows, _ = training_rows(TrainConfig(variants=(str(tmp_path / "art"),)))
    assert len(rows["val"]) > 0 and rows["val"]["synthetic"].all()
    assert set(rows["train"]["key"]).isdisjoint(rows["val"]["key"]) and len(rows["train"]) + len(rows["val"]) == 56
