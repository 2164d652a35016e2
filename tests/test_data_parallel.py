"""DDP under torchrun (two CPU processes, gloo) trains exactly what one process trains with gradient
accumulation over the same shards."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fersynth.ingest import ingest
from fersynth.modeling.data import InputConfig
from fersynth.train.recipe import TrainConfig
from fersynth.train.train import train


def _parameters(model_dir: Path, model_type=None) -> dict[str, torch.Tensor]:
    state = load_file(model_dir / "model.safetensors")
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


@pytest.fixture(scope="module")
def variant(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    ingest("fer2013", tiny_demo / "fer2013", root / "fer2013")
    return root


def test_two_gloo_processes_match_one_process_accumulating_two_shards(variant, monkeypatch):
    root = variant
    monkeypatch.setenv("DVC_ROOT", str(root))
    settings = {
        "variants": [str(root / "fer2013")],
        "input": {"size": 32, "channels": 1},
        "epochs": 1,  # the saved model is the last epoch's: BatchNorm running statistics (rank 0's under DDP)
        # differ between the two, so later epochs could pick different best checkpoints
        "batch_size": 16,
        "learning_rate": 0.01,
        # SGD, not Adam: a conv bias in front of BatchNorm has a zero gradient up to float noise, which the
        # summation order of DDP's all-reduce changes and Adam's normalisation would blow up to a full step
        "optimizer": "sgd",
        "seed": 4,
    }
    (root / "params.yaml").write_text(yaml.safe_dump({"train": {"ddp": settings}}))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = os.environ | {"DVC_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "fersynth.cli", "train", "ddp"]
    command += ["--model-dir", str(root / "ddp"), "--metrics", str(root / "ddp.json")]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    config = TrainConfig(**(settings | {"variants": tuple(settings["variants"]), "input": InputConfig(32, 1)}))
    # one thread, as each torchrun process: the summation order of CPU convolutions depends on the thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(TrainConfig(**{**config.__dict__, "accumulate": 2}), root / "single", root / "single.json")
    finally:
        torch.set_num_threads(threads)

    distributed, accumulated = _parameters(root / "ddp"), _parameters(root / "single")
    assert distributed.keys() == accumulated.keys() and len(distributed) > 10
    for name, value in distributed.items():
        torch.testing.assert_close(value, accumulated[name], rtol=1e-5, atol=1e-6, msg=name)
    ddp_metrics = yaml.safe_load((root / "ddp.json").read_text())  # JSON is YAML
    assert [h["train_loss"] for h in ddp_metrics["history"]] == pytest.approx(
        [h["train_loss"] for h in single["history"]], abs=1e-4
    )
    # and the processes did train: the weights moved from their initial values
    initial = train(TrainConfig(**{**config.__dict__, "epochs": 1, "learning_rate": 1e-12}), root / "init")
    assert initial["history"] and any(
        not torch.allclose(v, _parameters(root / "init")[k], atol=1e-3) for k, v in distributed.items()
    )
