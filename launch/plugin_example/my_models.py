"""A model plug-in: ``model.name: "my_models:make_net"``.

fedsim calls ``make_net(num_classes=C, in_channels=K, **model.args)``: C from the data (the class
list), K from the images (1 grayscale, 3 RGB). ``forward(x)`` gives logits (B, C). The
``features(x)`` / ``head(f)`` pair is optional: FedEFM (EMD weights) and MOON need the dense
feature map and take it from ``features``; without it, set ``model.features_layer: body``.
"""

from __future__ import annotations

import torch
from torch import nn


class HospitalNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.BatchNorm2d(4 * w), nn.ReLU(),
        )
        self.classifier = nn.Linear(4 * w, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 4w, H/8, W/8)
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_net(num_classes: int, in_channels: int, width: int = 16) -> nn.Module:
    return HospitalNet(num_classes, in_channels, width)
