"""FLamby's Fed-Heart-Disease through a data plug-in: each of its four hospitals (Cleveland,
Hungary, Switzerland, Long Beach) is a silo, as FLamby keeps them (``data.partition: natural``).

Install FLamby and its heart-disease data first (fedsim does not depend on it)::

    git clone https://github.com/owkin/FLamby.git && pip install -e "FLamby[heart]"
    python FLamby/flamby/datasets/fed_heart_disease/dataset_creation_scripts/download.py --output-folder heart

Then, from this folder (a ring of four silos, one per hospital)::

    python -m fedsim run --set topology=ring-4 --set algorithm=fedavg --set compare_with=[] \\
        --set downstream.enabled=false --set data.domains=null --set data.unseen_fraction=0 \\
        --set data.kind=python --set data.factory=flamby_heart:load --set data.partition=natural \\
        --set model.name=flamby_heart:mlp --set emd.grid=1

``load`` returns ``(train_set, test_set, centers)``: the training rows of the four hospitals pooled,
the hospital of each row, and their test rows. A row's 13 features become a 1×1×13 "image" (x a
float tensor C×H×W, as fedsim's data are), its label the int 0/1; ``mlp`` is a small network for
such rows with the ``features`` / ``head`` pair FedEFM and MOON read.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


def _rows(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    x = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(1, 1, -1) for v in xs])
    y = torch.tensor([int(torch.as_tensor(v).reshape(-1)[0]) for v in ys], dtype=torch.long)
    return x, y


def load(num_silos: int, seed: int, data_path: str | None = None):
    """The four hospitals' training rows pooled with their centre, and their test rows (FLamby's
    own split; ``seed`` unused: FLamby's data are fixed)."""
    try:  # imported here: only this plug-in needs FLamby
        from flamby.datasets.fed_heart_disease import NUM_CLIENTS, FedHeartDisease
    except ImportError as exc:
        raise ImportError("this example needs FLamby: git clone https://github.com/owkin/FLamby.git && "
                          'pip install -e "FLamby[heart]" (see the docstring of flamby_heart.py)') from exc
    kwargs = {"data_path": data_path} if data_path else {}
    train_x, train_y, centers, test_x, test_y = [], [], [], [], []
    for center in range(NUM_CLIENTS):
        x, y = _rows(FedHeartDisease(center=center, train=True, **kwargs))
        train_x.append(x)
        train_y.append(y)
        centers += [center] * len(y)
        x, y = _rows(FedHeartDisease(center=center, train=False, **kwargs))
        test_x.append(x)
        test_y.append(y)
    train = TensorDataset(torch.cat(train_x), torch.cat(train_y))
    test = TensorDataset(torch.cat(test_x), torch.cat(test_y))
    test.classes = ["no disease", "disease"]
    return train, test, centers


class RowNet(nn.Module):
    """A two-layer perceptron on (B, 1, 1, F) rows; its hidden layer is the (B, hidden, 1, 1)
    feature map."""

    def __init__(self, num_classes: int, in_channels: int, features: int = 13, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * features, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[:, :, None, None]

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def mlp(num_classes: int, in_channels: int, hidden: int = 32) -> nn.Module:
    return RowNet(num_classes, in_channels, hidden=hidden)
