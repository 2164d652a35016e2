import json

import pytest
import torch

from fersynth.modeling.architectures import DemographicsNet, SmallCNN
from fersynth.modeling.checkpoint import load_checkpoint, save_checkpoint
from fersynth.paths import CheckpointLayout


def test_a_saved_network_loads_back_exactly_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(7, 1, (4, 8)).to(memory_format=torch.channels_last)  # the gate's non-contiguous layout
    save_checkpoint(tmp_path / "m", model, {"classes": ["a", "b"], "channels": [4, 8]})
    layout = CheckpointLayout(tmp_path / "m")
    assert sorted(p.name for p in layout.root.iterdir()) == ["config.json", "model.safetensors"]
    assert layout.weights.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    state, config = load_checkpoint(tmp_path / "m")
    assert config == {"classes": ["a", "b"], "channels": [4, 8]}
    rebuilt = SmallCNN(7, 1, tuple(config["channels"]))
    rebuilt.load_state_dict(state)
    saved, loaded = model.state_dict(), rebuilt.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_checkpoints_written_before_the_shared_convention_still_load(tmp_path):
    # demographics-train wrote its files by hand: safetensors of the state dict and an indented config.json
    from safetensors.torch import save_file

    model = DemographicsNet((4, 8), head_width=8)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"widths": [4, 8]}, indent=2) + "\n")
    state, config = load_checkpoint(tmp_path)
    DemographicsNet(tuple(config["widths"]), head_width=8).load_state_dict(state)
    # and the shared writer gives byte-identical files for the same model and config (dvc.lock hashes hold)
    save_checkpoint(tmp_path / "again", model, {"widths": [4, 8]})
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_a_directory_that_is_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors missing"):
        load_checkpoint(tmp_path)
