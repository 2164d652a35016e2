import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from fersynth.ingest import ingest
from fersynth.modeling.trained import load_trained
from fersynth.paths import array_cache_dir, trial_dirs
from fersynth.train.recipe import TrainConfig
from fersynth.train.rows import training_rows
from fersynth.train.selection import best_trial_dir
from fersynth.train.train import train
from tests.conftest import ingested_workspace, tiny_train_config


@pytest.fixture(scope="module")
def workspace(tiny_demo, tmp_path_factory):
    with ingested_workspace(tmp_path_factory, "train", tiny_demo) as root:
        yield root


def small(root, **overrides):
    return tiny_train_config(root, size=32, **({"epochs": 3} | overrides))


def test_training_logs_a_parent_run_with_its_trial_and_saves_a_reloadable_best_checkpoint(workspace):
    metrics = train(small(workspace), workspace / "model", workspace / "metrics.json", run_name="baseline")
    assert json.loads((workspace / "metrics.json").read_text()) == metrics
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["best_val_accuracy"] == max(h["val_accuracy"] for h in metrics["history"])
    # one parent run for the training, its one trial nested under it
    runs = mlflow.search_runs(experiment_names=["fersynth"], filter_string="tags.`fersynth.experiment` = 'baseline'")
    parent, trial = (runs[runs["tags.mlflow.runName"] == name].iloc[0] for name in ("baseline", "baseline/seed-0"))
    assert len(runs) == 2 and trial["tags.mlflow.parentRunId"] == parent["run_id"]
    assert trial["metrics.test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert parent["metrics.test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    history = mlflow.tracking.MlflowClient().get_metric_history(trial["run_id"], "val_accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    assert metrics["validation"]["grouped_by"] == "row"  # FER2013 rows carry no subject
    model, spec, classes = load_trained(workspace / "model")
    config = small(workspace)
    assert (spec.architecture, spec.input, spec.variants, spec.seed) == (
        config.architecture,
        config.input,
        config.variants,
        config.seed,
    )
    assert len(classes) == 7 and model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    # the decoded-array cache was written once and reused
    assert len(list(array_cache_dir().glob("*.npy"))) == 3


@pytest.mark.slow  # ~80 s: paper 001's CNN (512-channel blocks) for 10 epochs on CPU
def test_training_learns_the_demo_expressions(tmp_path, monkeypatch):
    from fersynth.demo import DemoConfig, make_demo

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    make_demo(DemoConfig(datasets=("fer2013",), fer2013_rows=700), tmp_path / "demo")  # the session demo is tiny
    ingest("fer2013", tmp_path / "demo" / "fer2013", tmp_path / "fer2013")
    config = small(tmp_path, epochs=12, batch_size=32, learning_rate=1e-3)
    rows = training_rows(config).splits
    majority = rows["test"]["label"].value_counts(normalize=True).max()
    metrics = train(config, tmp_path / "model", run_name="learns")
    # measured at seeds 0-3: 0.56, 0.52, 0.64, 0.63 vs majority 0.31 on 88 test images (lr 3e-3: seed 0 stalls at 0.30)
    assert metrics["test_accuracy"] > majority + 0.1


def test_trials_train_one_model_per_seed_and_report_their_mean(workspace):
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
    # both nest under one parent run carrying the summary over seeds, the card and the registered version
    client = mlflow.tracking.MlflowClient()
    (parent_id,) = set(runs["tags.mlflow.parentRunId"])
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "trials" and parent.data.tags["fersynth.seeds"] == "3,4"
    summary = parent.data.metrics
    assert summary["test_accuracy"] == pytest.approx(metrics["test_accuracy"]) and summary["trials"] == 2
    assert (summary["test_accuracy_ci95_low"], summary["test_accuracy_ci95_high"]) == pytest.approx(
        tuple(metrics["test_accuracy_ci95"])
    )
    assert summary["test_accuracy_seed_sd"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2**0.5, abs=1e-6)
    assert parent.data.tags["fersynth.registered"].startswith("fersynth-trials/")
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"MODEL_CARD.md", "seed_summary.json"} <= artifacts
    # each trial's run names its experiment and seed, and logs the variant it trained on as an MLflow dataset
    assert set(runs["tags.fersynth.experiment"]) == {"trials"}
    assert sorted(runs["tags.fersynth.trial_seed"]) == ["3", "4"]
    run = mlflow.tracking.MlflowClient().get_run(runs.iloc[0]["run_id"])
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.name == "fer2013" and used.tags[0].value == "train"  # the context: the stage
    assert used.dataset.digest == runs.iloc[0]["tags.fersynth.input.fer2013.sha256"][:16]
    assert json.loads(used.dataset.profile)["num_rows"] == len(
        pd.read_parquet(workspace / "fer2013" / "manifest.parquet")
    )
    # the model card names the exact data, the seeds and the results with their interval
    card = (workspace / "trials" / "MODEL_CARD.md").read_text()
    digest = runs.iloc[0]["tags.fersynth.input.fer2013.sha256"]
    assert f"| `{workspace / 'fer2013'}` | `{digest}` |" in card
    assert f"Test accuracy {100 * metrics['test_accuracy']:.1f}% (95% interval over 2 seeds {100 * low:.1f}-" in card
    assert "| 3 |" in card and "| 4 |" in card and "## Intended use" in card and "## Known limits" in card
    states = [load_trained(d)[0].state_dict() for d in trial_dirs(workspace / "trials")]
    assert not torch.equal(states[0]["head.1.weight"], states[1]["head.1.weight"])  # different seeds, models
    history = pd.read_csv(workspace / "history.csv")
    assert list(history["epoch"]) == [1] and {"train_loss", "val_loss", "val_accuracy"} <= set(history.columns)


def test_every_trial_is_an_mlflow_model_and_the_best_by_validation_is_registered(workspace):
    config = small(workspace, epochs=2, trials=2, seed=7)
    metrics = train(config, workspace / "registered", run_name="registered")
    client = mlflow.tracking.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["fersynth"], filter_string="attributes.run_name LIKE 'registered/%'")
    by_seed = {int(r["tags.fersynth.trial_seed"]): r["run_id"] for _, r in runs.iterrows()}
    best = max(metrics["trials"], key=lambda t: (t["best_val_accuracy"], -t["seed"]))
    (version,) = client.search_model_versions("name = 'fersynth-registered'")
    assert version.run_id == by_seed[best["seed"]] and version.tags["fersynth.trial_seed"] == str(best["seed"])
    # the registered model loads from code (no pickle) and gives the trial's own probabilities
    loaded = mlflow.pyfunc.load_model("models:/fersynth-registered/1")
    assert loaded.metadata.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    model_dir = trial_dirs(workspace / "registered")[best["seed"] - 7]
    # `fersynth predict registered` runs that same trial, from the model directory alone
    assert best_trial_dir(workspace / "registered") == model_dir
    assert f"`fersynth serve`: seed {best['seed']} (" in (workspace / "registered" / "MODEL_CARD.md").read_text()
    model, _, classes = load_trained(model_dir)
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    served = loaded.predict(images.numpy())
    assert list(served.columns) == list(classes)
    expected = torch.softmax(model(images.float() / 255.0), 1).detach().numpy()
    assert served.to_numpy() == pytest.approx(expected, abs=1e-5)
    # the model checks its own input (MLflow's schema would cast floats to uint8 when served); the output is typed
    assert loaded.metadata.get_input_schema() is None
    assert loaded.metadata.get_output_schema().input_names() == list(classes)
    # the best by validation is @champion (trained in the workspace), described by the experiment's model card
    assert client.get_model_version_by_alias("fersynth-registered", "champion").version == version.version
    assert version.description == (workspace / "registered" / "MODEL_CARD.md").read_text()
    files = Path(mlflow.artifacts.download_artifacts(version.source, dst_path=str(workspace / "download")))
    names = {p.relative_to(files).as_posix() for p in files.rglob("*") if p.is_file()}
    assert {"artifacts/model.safetensors", "artifacts/config.json", "MLmodel"} <= names
    assert {"code/fersynth_pyfunc/architectures.py", "code/fersynth_pyfunc/preprocess.py"} <= names
    assert "fersynth" not in (files / "requirements.txt").read_text().replace("fersynth_pyfunc", "")
    assert not [n for n in names if n.endswith((".pkl", ".pt", ".pth", ".pickle"))]  # weights as safetensors only
    assert all("model_uri" not in t and "run_id" not in t for t in metrics["trials"])  # never in versioned metrics
    # every trial logs its test confusion counts; the registered one also the figure
    for seed, run_id in by_seed.items():
        names = {a.path for a in client.list_artifacts(run_id)}
        assert "confusion_test.json" in names
        assert ("confusion_test.png" in names) == (seed == best["seed"])
    counts = mlflow.artifacts.load_dict(f"runs:/{by_seed[best['seed']]}/confusion_test.json")
    assert counts["classes"] == list(classes) and sum(map(sum, counts["true_x_predicted"])) == metrics["rows"]["test"]


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


def test_log_models_best_logs_every_trials_run_but_only_the_registered_model(workspace):
    config = small(workspace, epochs=1, trials=2, seed=7, log_models="best")
    train(config, workspace / "best_only", run_name="best_only")
    runs = mlflow.search_runs(experiment_names=["fersynth"], filter_string="tags.`fersynth.experiment` = 'best_only'")
    runs = runs[runs["tags.fersynth.trial_seed"].notna()]  # the trials, not their parent run
    assert len(runs) == 2

    def has_model(run) -> bool:
        found = mlflow.search_logged_models(
            experiment_ids=[run["experiment_id"]],
            filter_string=f"source_run_id = '{run['run_id']}'",
            output_format="list",
        )
        return bool(found)

    logged = {int(run["tags.fersynth.trial_seed"]): has_model(run) for _, run in runs.iterrows()}
    [registered] = mlflow.MlflowClient().search_model_versions("name = 'fersynth-best_only'")
    assert sum(logged.values()) == 1 and logged[int(registered.tags["fersynth.trial_seed"])]


def test_min_steps_gives_a_small_train_set_the_updates_a_large_one_gets():
    config = TrainConfig(epochs=15, min_steps=300)
    assert config.epochs_for(14) == 22 and config.epochs_for(4) == 75  # FER2013's 432 rows; a quarter of them
    assert config.epochs_for(30) == 15  # a large set keeps its epochs
    assert TrainConfig(epochs=15).epochs_for(4) == 15


def test_the_checkpoint_is_the_best_val_accuracy_and_on_a_tie_the_lowest_val_loss(workspace, monkeypatch):
    """Validation accuracy moves in steps of 1/len(val), so epochs tie; the earliest of them is the least
    converged (one-cycle: the highest learning rate). The kept checkpoint is the tied epoch with the lowest loss.
    The validation scores are scripted (a tie at epochs 2 and 4, the lower loss at 4); training and test are real."""
    import fersynth.train.trial as trial

    scripted = iter([(1.0, 0.5), (0.9, 0.7), (0.95, 0.6), (0.8, 0.7), (0.85, 0.7)])
    real = trial.evaluate

    def evaluate(model, loader, device):
        step = next(scripted, None)
        if step is None:  # the test split, after the last epoch
            return real(model, loader, device)
        loss, accuracy = step
        return loss, accuracy, None

    monkeypatch.setattr(trial, "evaluate", evaluate)
    metrics = train(small(workspace, epochs=5), workspace / "ties", run_name="ties")
    assert [h["val_accuracy"] for h in metrics["history"]] == [0.5, 0.7, 0.6, 0.7, 0.7]
    assert metrics["trials"][0]["best_epoch"] == 4  # the first maximum (epoch 2) was the old rule
    assert metrics["best_val_accuracy"] == 0.7
