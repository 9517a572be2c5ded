"""A data plug-in: ``data.kind: python``, ``data.factory: "my_data:load"``.

fedsim calls ``load(num_silos=N, seed=S, **data.args)`` on every rank and expects
``(train_sets, test_set)``: a list of N torch Datasets (silo i's own data: the factory partitions)
or one pooled Dataset (then ``data.partition`` etc. split it), and one test Dataset. Items are
``(x, y)``: x a float tensor C×H×W in [0, 1], y an int class. Deterministic in ``seed``: every
rank must see the same data. Replace the generator below by your own reader (files, a database,
``torchvision.datasets.ImageFolder`` with ``transforms.ToTensor()``, …).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset


def _site(g: torch.Generator, n: int, size: int, classes: int, shift: float) -> TensorDataset:
    """n RGB images whose colour says the class; every site has its own colour cast (shift)."""
    y = torch.randint(classes, (n,), generator=g)
    palette = torch.rand(classes, 3, generator=torch.Generator().manual_seed(1))
    x = torch.randn(n, 3, size, size, generator=g).mul_(0.1).add_(palette[y].view(n, 3, 1, 1)).add_(shift)
    return TensorDataset(x.clamp_(0, 1), y)


def load(num_silos: int, seed: int, samples: int = 128, size: int = 32, classes: int = 10,
         pooled: bool = False) -> tuple[list[Dataset] | Dataset, Dataset]:
    g = torch.Generator().manual_seed(seed)
    if pooled:  # one set: fedsim's partitioners (iid, dirichlet, quantity, unseen classes) split it
        train: list[Dataset] | Dataset = _site(g, samples * num_silos, size, classes, 0.0)
    else:  # one set per hospital, each with its own colour cast
        train = [_site(g, samples, size, classes, 0.1 * (i - num_silos / 2)) for i in range(num_silos)]
    return train, _site(g, 2 * samples, size, classes, 0.0)
