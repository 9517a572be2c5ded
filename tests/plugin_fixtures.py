"""Plug-ins as a user writes them (imported by path: ``tests.plugin_fixtures:make_net``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyNet(nn.Module):
    """A user's own classifier: no ``features`` method (FedEFM/MOON need model.features_layer)."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, 1, 1), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


class TinyNetWithFeatures(TinyNet):
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_net(num_classes: int, in_channels: int, width: int = 4) -> nn.Module:
    return TinyNet(num_classes, in_channels, width)


def make_net_with_features(num_classes: int, in_channels: int, width: int = 4) -> nn.Module:
    return TinyNetWithFeatures(num_classes, in_channels, width)


def make_wrong_head(num_classes: int, in_channels: int) -> nn.Module:
    return TinyNet(num_classes + 1, in_channels)


def not_a_module(num_classes: int, in_channels: int):
    return "a string"


class Blobs(Dataset):
    """Images whose mean colour depends on the class (learnable in a few steps)."""

    def __init__(self, labels: torch.Tensor, size: int, channels: int, g: torch.Generator) -> None:
        self.labels = labels
        base = torch.linspace(0.2, 0.8, int(labels.max()) + 1)
        noise = torch.rand(len(labels), channels, size, size, generator=g) * 0.3
        self.images = (base[labels].view(-1, 1, 1, 1) + noise).clamp(0, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def load(num_silos: int, seed: int, n: int = 24, size: int = 12, classes: int = 3, channels: int = 3,
         pooled: bool = False):
    """``(train_sets, test_set)``: one set per silo (or one pooled set), deterministic by seed."""
    g = torch.Generator().manual_seed(seed)
    if pooled:
        train = Blobs(torch.randint(classes, (n * num_silos,), generator=g), size, channels, g)
    else:
        train = [Blobs(torch.randint(classes, (n,), generator=g), size, channels, g) for _ in range(num_silos)]
    test = Blobs(torch.arange(2 * classes) % classes, size, channels, g)
    return train, test


def load_bad_shape(num_silos: int, seed: int):
    train, test = load(num_silos, seed)
    return train, [test]  # a list where one Dataset is expected


class FlatItems(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return torch.zeros(12 * 12), 0  # not C×H×W


def load_flat_items(num_silos: int, seed: int):
    return [FlatItems() for _ in range(num_silos)], FlatItems()
