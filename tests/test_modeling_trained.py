import json
from dataclasses import asdict

import pytest
import torch

from fersynth.modeling.architectures import build_model
from fersynth.modeling.checkpoint import save_checkpoint
from fersynth.modeling.data import InputConfig
from fersynth.modeling.trained import load_trained
from fersynth.paths import trial_name
from fersynth.train.recipe import TrainConfig


def test_a_train_checkpoint_loads_with_its_input_settings_classes_and_first_trial(tmp_path):
    config = TrainConfig(variants=("data/x",), input=InputConfig(size=16), seed=3)
    classes = ("a", "b", "c")
    models = {}
    for seed in (3, 4):
        torch.manual_seed(seed)
        models[seed] = build_model("paper001_cnn", 3, 1, 16).eval()
        values = asdict(config) | {"seed": seed, "classes": list(classes)}  # what `fersynth train` writes
        save_checkpoint(tmp_path / "exp" / trial_name(seed), models[seed], values)
    model, spec, loaded_classes = load_trained(tmp_path / "exp")
    assert loaded_classes == classes and spec.input == InputConfig(size=16) and spec.variants == ("data/x",)
    assert spec.seed == 3 and not model.training
    assert all(torch.equal(v, models[3].state_dict()[k]) for k, v in model.state_dict().items())  # first trial
    x = torch.rand(2, 1, 16, 16)  # (loaded channels-last: the same numbers up to float summation order)
    torch.testing.assert_close(model(x), models[3](x), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_kind_is_refused_by_name(tmp_path):
    save_checkpoint(tmp_path, torch.nn.Linear(2, 2), {"widths": [4]})
    with pytest.raises(ValueError, match="not a `fersynth train` model"):
        load_trained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == {"widths": [4]}


def test_a_narrow_model_is_rebuilt_at_its_width(tmp_path):
    config = TrainConfig(variants=("data/x",), input=InputConfig(size=16), width=0.25)
    torch.manual_seed(0)
    narrow = build_model("paper001_cnn", 3, 1, 16, width=0.25).eval()
    save_checkpoint(tmp_path, narrow, asdict(config) | {"classes": ["a", "b", "c"]})
    model, spec, _ = load_trained(tmp_path)  # a full-width rebuild would not accept the narrow weights
    assert spec.width == 0.25
    assert all(torch.equal(v, narrow.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model(x), narrow(x), rtol=1e-5, atol=1e-6)
