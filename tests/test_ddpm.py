import json

import mlflow
import numpy as np
import pytest
import torch

from fersynth.generate.ddpm import (
    TABLE2,
    DdpmSampleConfig,
    DdpmTrainConfig,
    class_counts,
    ddpm_sample,
    ddpm_train,
    load_ddpm,
    make_sampler,
    sample,
)
from fersynth.generate.gate import GateConfig
from fersynth.ingest import ingest
from fersynth.variants.labels import CASME2
from fersynth.variants.variant import Variant
from tests.conftest import run_alone_and_with_torchrun, tree_bytes

TINY = DdpmTrainConfig(size=16, channels=(8, 16), steps=30, batch_size=8, timesteps=100, log_every=10)


@pytest.fixture(scope="module")
def trained(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddpm")
    mp = pytest.MonkeyPatch()
    mp.setenv("DVC_ROOT", str(root))
    ingest("casme2", tiny_demo / "casme2", root / "casme2")
    metrics = ddpm_train(root / "casme2", root / "model", TINY, root / "train.json")
    yield root, metrics
    mp.undo()


def test_training_uses_train_subjects_only_and_logs_the_loss_curve(trained):
    root, metrics = trained
    info = json.loads((root / "model" / "ddpm.json").read_text())
    manifest = Variant(root / "casme2").manifest
    assert info["train_subjects"] == sorted(manifest.loc[manifest["split"] == "train", "subject"].unique())
    assert not set(info["train_subjects"]) & set(manifest.loc[manifest["split"] == "test", "subject"])
    curve = json.loads((root / "train.json").read_text())["loss_curve"]
    assert len(curve) == 3 and curve[-1] < curve[0]  # it learns something in 30 steps
    runs = mlflow.search_runs(experiment_names=["fersynth"], filter_string="tags.`fersynth.stage` = 'ddpm-train'")
    assert len(runs) == 1 and (root / "model" / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_a_sample_depends_on_its_seed_only(trained):
    root, _ = trained
    unet, scheduler, _ = load_ddpm(root / "model")
    ddim = make_sampler("ddim", scheduler)
    together = sample(unet, ddim, [0, 3], [11, 12], steps=5)
    alone = sample(unet, ddim, [3], [12], steps=5)
    assert together.shape == (2, 16, 16) and together.dtype == np.uint8
    assert np.abs(together[1].astype(int) - alone[0]).max() <= 1
    assert np.abs(together[0].astype(int) - together[1]).mean() > 5


def test_class_counts_follow_table_2():
    counts = class_counts(15464, TABLE2)
    assert counts == {c: TABLE2[c] for c in CASME2}
    small = class_counts(70, TABLE2)
    assert sum(small.values()) == 70 and small["disgust"] == max(small.values())


def test_sampled_variant_has_its_own_split_and_full_provenance(trained):
    root, _ = trained
    config = DdpmSampleConfig(total=14, sampler="ddim", steps=4, batch_size=8, gate=GateConfig(detector="none"))
    report = ddpm_sample(root / "model", root / "ddpm_casme", config, root / "sample.json")
    manifest = Variant(root / "ddpm_casme").manifest
    assert len(manifest) + sum(report["rejected_because"].values()) == report["attempts"]
    assert set(manifest["split"]) <= {"train", "test"} and manifest["synthetic"].all()
    assert set(manifest["generator"]) == {"ddpm:ddim"} and set(manifest["steps"]) == {4}
    assert set(manifest["label_space"]) == {"casme2"}
    again = ddpm_sample(root / "model", root / "again", config)
    assert again["kept"] == report["kept"]
    assert (root / "again" / "manifest.parquet").read_bytes() == (root / "ddpm_casme" / "manifest.parquet").read_bytes()


@pytest.mark.parametrize("device", [0, "cuda:x", "gpu", "CUDA"])
def test_ddpm_train_device_must_be_a_torch_device_name(device):
    with pytest.raises(ValueError, match="ddpm_train.device"):
        DdpmTrainConfig(device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_asking_for_a_gpu_that_is_not_there_is_one_line_before_any_work(tmp_path):
    from fersynth.errors import ParamsError
    from fersynth.generate.ddpm import ddpm_train

    with pytest.raises(ParamsError, match="no CUDA GPU"):
        ddpm_train(tmp_path / "no-variant-needed", tmp_path / "model", DdpmTrainConfig(device="cuda"))
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_torchrun_sampling_writes_what_one_process_writes(trained):
    """Two gloo processes share every attempt's batches; rank 0 writes the same bytes one process writes."""
    import os

    import yaml

    root, _ = trained
    unet, scheduler, _ = load_ddpm(root / "model")
    probe = sample(unet, make_sampler("ddim", scheduler), [0] * 12, list(range(12)), steps=4)
    # a blank-threshold at the probe's 30th percentile of grey-level deviation: some attempts fail, so the
    # processes must agree on which slots to retry
    threshold = float(np.percentile([p.std() for p in probe], 30))
    settings = {
        "total": 17,
        "sampler": "ddim",
        "steps": 4,
        "batch_size": 3,
        "max_attempts_per_image": 3,
        "gate": {
            "detector": "none",
            "blank_std_below": threshold,
            "dark_below": 0,
            "washed_out_above": 255,
            "blur_below": 0,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump({"ddpm_sample": settings}))
    stage = ["-m", "fersynth.cli", "ddpm-sample", "--model-dir", "model", "--params", "params.yaml"]
    run_alone_and_with_torchrun(root, stage, os.environ | {"DVC_ROOT": str(root)})
    assert tree_bytes(root / "team") == tree_bytes(root / "single")
    assert (root / "team.json").read_bytes() == (root / "single.json").read_bytes()
    metrics = json.loads((root / "team.json").read_text())
    assert metrics["attempts"] > 17 and metrics["acceptance"] < 1  # retries happened, in step on both ranks
    kept = len(Variant(root / "team").manifest)
    assert kept == sum(metrics["per_class"].values()) and 0 < kept <= 17


def test_every_slot_of_a_class_larger_than_a_batch_is_sampled_once(trained, tmp_path):
    """Batches are cut before the gate's verdicts remove slots (the first version cut them while removing:
    slots 4-7 of 10 were never sampled and an empty batch followed)."""
    root, _ = trained
    permissive = GateConfig(detector="none", blank_std_below=0, dark_below=0, washed_out_above=255, blur_below=0)
    config = DdpmSampleConfig(
        total=10, proportions={"happiness": 1}, sampler="ddim", steps=2, batch_size=4, gate=permissive, device="cpu"
    )
    report = ddpm_sample(root / "model", tmp_path / "out", config)
    manifest = Variant(tmp_path / "out").manifest
    assert report["attempts"] == 10 and len(manifest) == 10
    assert manifest["attempt"].eq(0).all() and manifest["seed"].is_unique
