"""torchvision datasets read from a local root (``data.kind: torchvision``).

``data.name`` is a class of ``torchvision.datasets`` (MNIST, FashionMNIST, KMNIST, CIFAR10,
CIFAR100, SVHN, …) opened with ``root=data.root``, its training split pooled and partitioned over
the silos like any pooled data (iid, dirichlet, quantity, unseen classes, label noise), its test
split the global test set. Nothing is downloaded unless ``data.download: true``. Images keep their
own size and channels (``data.channels`` converts); classes come from the dataset's ``classes``.
Only the silos a rank hosts are converted to float tensors.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.config.data import torchvision_class
from fedsim.errors import DataError

from . import partition as P
from .dataset import FederatedData, SiloDataset, to_channels
from .synthetic import make_generator


def open_split(cfg, train: bool) -> Any:
    """``torchvision.datasets.<name>(root, train=…/split=…, download=data.download, **data.args)``."""
    cls = torchvision_class(cfg.name)
    params = inspect.signature(cls.__init__).parameters
    kwargs = dict(cfg.args)
    if "train" in params:
        kwargs["train"] = train
    elif "split" in params:
        kwargs["split"] = "train" if train else "test"
    else:
        raise DataError(f"torchvision.datasets.{cfg.name} has no train/test split argument; load it with "
                        "data.kind: python and a factory")
    if "download" in params:
        kwargs["download"] = bool(cfg.download)
    root = Path(cfg.root).expanduser()
    if cfg.download:
        root.mkdir(parents=True, exist_ok=True)
    split = "training" if train else "test"
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, FileNotFoundError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "" if cfg.download else "; put the files there or set data.download: true to fetch them"
        raise DataError(f"data.root {root}: cannot read the {cfg.name} {split} split ({first}){hint}") from None


def images_and_labels(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All images as uint8 (N, C, H, W) and labels as int64 (N,): straight from the arrays most
    torchvision datasets hold (``data`` + ``targets``/``labels``), else item by item."""
    data = getattr(ds, "data", None)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = getattr(ds, "labels", None)
    if data is not None and targets is not None and hasattr(data, "shape") and len(data) == len(targets):
        x = torch.as_tensor(np.asarray(data))
        if x.dtype == torch.uint8 and x.dim() == 3:  # (N, H, W): MNIST family
            x = x[:, None]
        elif x.dtype == torch.uint8 and x.dim() == 4 and x.shape[-1] in (1, 3):  # (N, H, W, C): CIFAR
            x = x.permute(0, 3, 1, 2)
        elif not (x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] in (1, 3)):  # (N, C, H, W): SVHN
            x = None
        if x is not None:
            return x.contiguous(), torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    from torchvision.transforms.functional import pil_to_tensor

    xs, ys = [], []
    for i in range(len(ds)):
        img, y = ds[i]
        xs.append(pil_to_tensor(img) if not isinstance(img, torch.Tensor) else img)
        ys.append(int(y))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def load_torchvision(cfg, num_silos: int, seed: int, wanted: set[int]) -> FederatedData:
    train_ds, test_ds = open_split(cfg, True), open_split(cfg, False)
    x_train, y_train = images_and_labels(train_ds)
    x_test, y_test = images_and_labels(test_ds)
    names = getattr(train_ds, "classes", None)
    if names and len(names) > int(max(y_train.max(), y_test.max())):
        names = tuple(str(c) for c in names)
    else:
        names = tuple(str(i) for i in range(int(max(y_train.max(), y_test.max())) + 1))
    num_classes = len(names)
    g = make_generator(seed, 8)
    source = f"torchvision {cfg.name} at {cfg.root}"
    parts = P.split_pool(cfg, num_silos, num_classes, y_train, None, None, g, source)
    labels = [y_train[p] for p in parts]
    noisy = ([P.symmetric_label_noise(y, float(cfg.label_noise), num_classes, g) for y in labels]
             if cfg.label_noise > 0 else labels)

    def as_float(x: torch.Tensor) -> torch.Tensor:
        return to_channels(x.float().div_(255.0), cfg.channels)

    train: list[SiloDataset | None] = []
    for i, p in enumerate(parts):
        if len(p) == 0:
            raise DataError(f"{source}: silo {i} has no training images after partitioning")
        if i not in wanted:
            train.append(None)
            continue
        ds = SiloDataset(as_float(x_train[p]), None, noisy[i], None, None, None, labels[i], f"silo{i}")
        train.append(ds)
    test = SiloDataset.from_tensors(as_float(x_test), y_test, "test")
    return FederatedData(train, test, num_classes, names)
