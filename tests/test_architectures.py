import pytest
import torch

from fersynth.modeling.architectures import ARCHITECTURES, DEFAULT_SIZE, build_model, learnable_layers

SIZES = DEFAULT_SIZE  # each architecture at the input size the papers use it at


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_runs_forward_and_backward(name):
    torch.manual_seed(0)
    channels = 1 if name == "paper001_cnn" else 3
    model = build_model(name, n_classes=7, in_channels=channels, size=SIZES[name])
    x = torch.randn(2, channels, SIZES[name], SIZES[name])
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_paper001_cnn_matches_the_papers_layers():
    model = build_model("paper001_cnn", 7)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [
        (64, (3, 3)),
        (128, (5, 5)),
        (512, (3, 3)),
        (512, (3, 3)),
    ]
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(512 * 3 * 3, 256), (256, 512), (512, 7)]
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.25] * 6


def test_paper001_cnn_width_scales_the_filters_and_keeps_the_head():
    model = build_model("paper001_cnn", 7, width=0.25)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 128, 128]
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(128 * 3 * 3, 256), (256, 512), (512, 7)]
    assert model(torch.rand(2, 1, 48, 48)).shape == (2, 7)
    with pytest.raises(ValueError, match=r"paper001_cnn and small_cnn\(_s2\) only"):
        build_model("mobilenet_v2", 7, in_channels=3, width=0.5)


@pytest.mark.parametrize("name,fraction", [("vgg16", 0.3), ("resnet50", 0.3), ("mobilenet_v2", 1.0)])
def test_freezing_freezes_the_first_fraction_of_learnable_layers(name, fraction):
    model = build_model(name, 7, in_channels=3)
    layers = learnable_layers(model.features)
    frozen = model.freeze(fraction)
    assert frozen == round(fraction * len(layers))
    flags = [all(not p.requires_grad for p in layer.parameters(recurse=False)) for layer in layers]
    assert flags == [True] * frozen + [False] * (len(layers) - frozen)
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    norms = [m for m in layers[:frozen] if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in norms)  # frozen statistics stay frozen in training mode


def test_imagenet_weights_load_from_a_local_file(tmp_path):
    import torchvision.models as tvm
    from safetensors.torch import save_file

    reference = tvm.mobilenet_v2(weights=None)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "mnv2.safetensors")
    model = build_model("mobilenet_v2", 7, in_channels=3, weights_path=str(tmp_path / "mnv2.safetensors"))
    first = next(iter(model.features.parameters()))
    assert torch.equal(first, next(iter(reference.features.parameters())))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("alexnet", 7)


def test_small_cnn_width_scales_its_blocks_and_trains_as_a_classifier():
    model = build_model("small_cnn", 7, 3, 48, width=2.0)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128] and convs[0].in_channels == 3
    assert model(torch.rand(2, 3, 48, 48)).shape == (2, 7)
    assert model.freeze(1.0) == 6  # three convolutions and their BatchNorms; the head still trains
    assert all(p.requires_grad for p in model.head.parameters())
