"""The networks the stages train, built by name where params choose them.

- ``paper001_cnn``: paper 001's custom CNN (its Fig. 8 and code): four blocks Conv -> BN -> ReLU ->
  MaxPool -> Dropout 0.25 with 64 (3x3), 128 (5x5), 512 (3x3), 512 (3x3) filters, then the head.
- torchvision backbones (``vgg16``, ``vgg19``, ``resnet50``, ``inception_v3``, ``efficientnet_b0``,
  ``mobilenet_v2``) with their classifier replaced by the same head on globally pooled features
  (paper 001: EfficientNetB0 for NHFI, MobileNetV2 for the artificial set; papers 000/004: VGG19;
  paper 002: VGG16, ResNet50, Inception V3). ImageNet weights load from a local file when given: none can
  be downloaded here.
- The head (paper 001): Flatten -> Dense 256 -> BN -> ReLU -> Dropout 0.25 -> Dense 512 -> BN -> ReLU ->
  Dropout 0.25 -> Dense n_classes.
- :class:`SmallCNN`: the small fixed CNN of relabelling and of the gate's emotion check.
- :class:`DemographicsNet`: paper 001's age / gender / race network (trained on UTKFace by ``demographics-train``).

``Classifier.freeze(fraction)`` freezes the first fraction of the backbone's learnable layers (paper 002: 30%; paper
001 froze the whole pretrained backbone: 1.0).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

BACKBONES = ("vgg16", "vgg19", "resnet50", "inception_v3", "efficientnet_b0", "mobilenet_v2")
ARCHITECTURES = ("paper001_cnn", "small_cnn", "small_cnn_s2", *BACKBONES)
SMALL_CNN_CHANNELS = (16, 32, 64)  # small_cnn at width 1.0; width scales every block
# Input side each architecture is used at by the papers (inception_v3 needs at least 75; 299 is native).
DEFAULT_SIZE = {"paper001_cnn": 48, "small_cnn": 48, "small_cnn_s2": 48, "inception_v3": 299} | dict.fromkeys(
    ("vgg16", "vgg19", "resnet50", "efficientnet_b0", "mobilenet_v2"), 224
)


def paper_head(features: int, n_classes: int, dropout: float = 0.25) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(256, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(512, n_classes),
    )


class Classifier(nn.Module):
    """``features`` (the backbone) then ``head``; the first layers of ``features`` can be frozen."""

    features: nn.Module
    head: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self._frozen_norms: list[nn.Module] = []

    def freeze(self, fraction: float) -> int:
        """Freeze the first ``fraction`` of the backbone's learnable layers (the head always trains);
        frozen BatchNorm layers also keep their running statistics. Returns the number frozen."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"freeze fraction must be within [0, 1], got {fraction}")
        layers = learnable_layers(self.features)
        count = int(round(fraction * len(layers)))
        for layer in layers[:count]:
            for parameter in layer.parameters(recurse=False):
                parameter.requires_grad_(False)
        self._frozen_norms = [m for m in layers[:count] if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.train(self.training)
        return count

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for norm in self._frozen_norms:
            norm.eval()
        return self


class Paper001CNN(Classifier):
    """``width`` scales every block's filter count (1.0: the paper's 64 / 128 / 512 / 512; the CPU demo
    trains 0.25, about 10x faster: benchmarks/bench_training.py); the head is the paper's at any width."""

    def __init__(
        self, n_classes: int = 7, in_channels: int = 1, size: int = 48, dropout: float = 0.25, width: float = 1.0
    ):
        super().__init__()
        if not 0 < width <= 4:
            raise ValueError(f"paper001_cnn width must be within (0, 4], got {width}")
        layers: list[nn.Module] = []
        previous = in_channels
        for filters, kernel in ((64, 3), (128, 5), (512, 3), (512, 3)):
            channels = max(1, round(filters * width))
            layers += [
                nn.Conv2d(previous, channels, kernel, padding=kernel // 2),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
            ]
            previous = channels
        self.features = nn.Sequential(*layers)
        side = size // 16
        if side < 1:
            raise ValueError(f"paper001_cnn needs inputs of at least 16 px, got {size}")
        self.head = paper_head(previous * side * side, n_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BackboneClassifier(Classifier):
    """A torchvision backbone's feature extractor, global average pooling, the paper head."""

    def __init__(self, name: str, n_classes: int, weights_path: str = "", dropout: float = 0.25):
        super().__init__()
        import torchvision.models as tvm

        builder = getattr(tvm, name)
        kwargs = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
        model = builder(weights=None, **kwargs)
        if weights_path:
            state = _load_state(Path(weights_path))
            missing, unexpected = model.load_state_dict(state, strict=False)
            log_missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
            if log_missing:
                raise ValueError(f"{weights_path}: weights for {len(log_missing)} backbone tensors missing")
        self.features, width = _feature_extractor(name, model)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = paper_head(width, n_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def _feature_extractor(name: str, model: nn.Module) -> tuple[nn.Module, int]:
    if name.startswith("vgg"):
        return model.features, 512
    if name in ("resnet50", "inception_v3"):
        children = [m for n, m in model.named_children() if n not in ("fc", "avgpool", "dropout", "AuxLogits")]
        return nn.Sequential(*children), model.fc.in_features
    if name == "efficientnet_b0":
        return model.features, model.classifier[-1].in_features
    if name == "mobilenet_v2":
        return model.features, model.classifier[-1].in_features
    raise ValueError(f"unknown backbone {name!r}")


def _load_state(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def build_model(
    name: str,
    n_classes: int,
    in_channels: int = 1,
    size: int | None = None,
    weights_path: str = "",
    width: float = 1.0,
) -> Classifier:
    """``in_channels``: 1 for grey input to the custom CNN; torchvision backbones take 3 (grey images are
    repeated over the channels by the data pipeline). ``width`` scales the custom CNN's filters only."""
    if name == "paper001_cnn":
        return Paper001CNN(n_classes, in_channels, size or DEFAULT_SIZE[name], width=width)
    if name in ("small_cnn", "small_cnn_s2"):
        if not 0 < width <= 8:
            raise ValueError(f"{name} width must be within (0, 8], got {width}")
        channels = tuple(max(1, round(c * width)) for c in SMALL_CNN_CHANNELS)
        return SmallCNN(n_classes, in_channels, channels, strided_stem=name == "small_cnn_s2")
    if width != 1.0:
        raise ValueError(f"width applies to paper001_cnn and small_cnn(_s2) only, not {name!r} (got {width})")
    if name not in BACKBONES:
        raise ValueError(f"unknown architecture {name!r}; known: {ARCHITECTURES}")
    if in_channels != 3:
        raise ValueError(f"{name} takes 3 input channels, got {in_channels}")
    return BackboneClassifier(name, n_classes, weights_path)


def channels_last(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """``model`` on ``device`` with its 4-d weights channels-last, the layout
    :class:`~fersynth.modeling.data.BatchLoader` batches come in (~1.3x faster training on CPU)."""
    return model.to(device, memory_format=torch.channels_last)


def learnable_layers(module: nn.Module) -> list[nn.Module]:
    """Modules that own parameters directly (conv, linear, norm), in definition order."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


class SmallCNN(Classifier):
    """Conv-BN-ReLU-MaxPool blocks, a 3x3 average pool (expressions are about *where*: mouth versus
    brows, so a global pool would throw the signal away), linear head. The relabelling and gate classifier,
    and ``small_cnn`` for ``train`` (the demo's recipe: a quarter of paper001_cnn's cost per image at 48 px)."""

    def __init__(
        self,
        n_classes: int,
        in_channels: int = 1,
        channels: tuple[int, ...] = SMALL_CNN_CHANNELS,
        strided_stem: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for block, width in enumerate(channels):
            if block == 0 and strided_stem:  # the same output size for about half the cost at 48 px on a CPU
                layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            else:
                layers += [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Dropout(0.3), nn.Linear(previous * 9, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


MAX_AGE = 116.0  # UTKFace's oldest age: DemographicsNet's age output is a sigmoid scaled to it


class DemographicsNet(nn.Module):
    """Paper 001's age / gender / race network: six conv blocks (32 to 192 filters), global max pool, three
    Dense-128 heads: age (sigmoid x 116), race (5 logits), gender (2 logits)."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 96, 128, 160, 192), head_width: int = 128):
        super().__init__()
        blocks: list[nn.Module] = []
        previous = 3
        for width in widths:
            blocks += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(width), nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten())

        def head(outputs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(previous, head_width), nn.ReLU(), nn.Dropout(0.3), nn.Linear(head_width, outputs)
            )

        self.age, self.race, self.gender = head(1), head(5), head(2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(x)
        return {
            "age": torch.sigmoid(self.age(features)).squeeze(1) * MAX_AGE,
            "race": self.race(features),
            "gender": self.gender(features),
        }
