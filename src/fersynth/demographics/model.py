"""The age / gender / race network of paper 001 (trained on UTKFace): six conv blocks (32 to 192
filters), global max pool, three Dense-128 heads: age (sigmoid x 116, MSE), race (softmax 5), gender
(softmax 2), loss weights 2 / 1.5 / 1."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MAX_AGE = 116.0
LOSS_WEIGHTS = {"age": 2.0, "race": 1.5, "gender": 1.0}


class AGRNet(nn.Module):
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


def agr_loss(
    outputs: dict[str, torch.Tensor], age: torch.Tensor, race: torch.Tensor, gender: torch.Tensor
) -> torch.Tensor:
    """Weighted sum; the age MSE is taken on age / 116 so it is on the scale of the sigmoid."""
    return (
        LOSS_WEIGHTS["age"] * F.mse_loss(outputs["age"] / MAX_AGE, age / MAX_AGE)
        + LOSS_WEIGHTS["race"] * F.cross_entropy(outputs["race"], race)
        + LOSS_WEIGHTS["gender"] * F.cross_entropy(outputs["gender"], gender)
    )
