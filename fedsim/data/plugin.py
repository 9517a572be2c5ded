"""Data from a Python plug-in (``data.kind: python``, ``data.factory: "my_pkg.data:load"``).

The factory is called on every rank as ``load(num_silos=N, seed=S, **data.args)`` and returns
``(train_sets, test_set)``: a list of N torch ``Dataset``s — silo i's training data, partitioned
by the factory itself — or one pooled ``Dataset`` that the built-in partitioners split (iid,
dirichlet, quantity, unseen classes, label noise), plus one test ``Dataset``; or
``(train_set, test_set, centers)`` — one pooled set and the centre of each of its samples (a
sequence of ints) — for ``data.partition: natural``: silo i is the i-th centre id in sorted order
(as many centres as silos), as FLamby's datasets keep their hospitals apart. Items are
``(x, y)``: x a float tensor C×H×W, y an int class. It must be deterministic given its
arguments (every rank calls it and must see the same data).

Each dataset a rank needs is read once into memory (its silos and the test set; a pooled set
whole, since partitioning needs every label). The number of classes is ``len(data.classes)``,
else ``test_set.classes`` (names, or their number), else the largest label of all sets + 1 — the same on every rank.
Wrong return values are one line naming the factory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedsim.errors import DataError
from fedsim.plugins import call

from . import partition as P
from .dataset import FederatedData, SiloDataset, to_channels
from .medmnist import natural_parts
from .synthetic import make_generator

KEY = "data.factory"


def _is_dataset(obj: Any) -> bool:
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(obj, (list, tuple, str))


def _label(y: Any, where: str) -> int:
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point() and not y.is_complex():
        return int(y.item())
    if hasattr(y, "__index__") and not isinstance(y, bool):
        return int(y.__index__())
    raise DataError(f"{where}: y must be an int class, got {type(y).__name__} {y!r}")


def labels_of(ds: Any, where: str) -> torch.Tensor:
    """Every label of ``ds`` (from ``targets`` when it has them, else item by item)."""
    targets = getattr(ds, "targets", None)
    if targets is not None and len(targets) == len(ds):
        return torch.as_tensor([_label(y, where) for y in targets], dtype=torch.long)
    return torch.tensor([_label(_item(ds, i, where)[1], f"{where} item {i}") for i in range(len(ds))],
                        dtype=torch.long)


def _item(ds: Any, i: int, where: str) -> tuple[Any, Any]:
    try:
        item = ds[i]
    except Exception as exc:  # noqa: BLE001 - user code
        raise DataError(f"{where}: reading item {i} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError(f"{where}: item {i} must be a pair (x, y), got {type(item).__name__}")
    return item[0], item[1]


def materialize(ds: Any, name: str, where: str) -> SiloDataset:
    """Read every item of ``ds`` into a :class:`SiloDataset`, checking each one's shape."""
    if len(ds) == 0:
        raise DataError(f"{where} is empty")
    images: torch.Tensor | None = None  # filled in place: no list of items plus a stacked copy
    labels = torch.empty(len(ds), dtype=torch.long)
    for i in range(len(ds)):
        x, y = _item(ds, i, where)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 3:
            got = f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"{where}: item {i}: x must be a float tensor C×H×W, got {got}")
        if images is None:
            images = torch.empty((len(ds), *x.shape), dtype=torch.float32)
        elif x.shape != images.shape[1:]:
            raise DataError(f"{where}: item {i} has shape {tuple(x.shape)}, item 0 has {tuple(images.shape[1:])}; "
                            "every image must have the same size")
        images[i] = x.detach()
        labels[i] = _label(y, f"{where} item {i}")
    return SiloDataset.from_tensors(images, labels, name)


def load_python(cfg, num_silos: int, seed: int, wanted: set[int]) -> FederatedData:
    path = cfg.factory
    out = call(path, KEY, DataError, num_silos=num_silos, seed=seed, **cfg.args)
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise DataError(f"{KEY}: {path} must return (train_sets, test_set) or (train_set, test_set, centers), "
                        f"got {type(out).__name__}")
    train, test = out[0], out[1]
    centers = _centers(out[2], train, path) if len(out) == 3 else None
    if cfg.partition == "natural" and centers is None:
        raise DataError(f"data.partition natural: {KEY}: {path} must return (train_set, test_set, centers), centers "
                        "holding the centre of each training sample")
    if centers is not None and cfg.partition != "natural":
        raise DataError(f"{KEY}: {path} returned the centre of each sample: set data.partition: natural to make "
                        "each centre a silo (or return (train_set, test_set) to split otherwise)")
    if not _is_dataset(test):
        raise DataError(f"{KEY}: {path} returned a test set of type {type(test).__name__}, not a Dataset")
    pooled = _is_dataset(train)
    if not pooled:
        if not isinstance(train, (list, tuple)) or not all(_is_dataset(d) for d in train):
            raise DataError(f"{KEY}: {path} must return a list of {num_silos} training Datasets (or one pooled "
                            f"Dataset) first, got {type(train).__name__}")
        if len(train) != num_silos:
            raise DataError(f"{KEY}: {path} returned {len(train)} training sets for {num_silos} silos")
        if cfg.partition not in ("domain", "natural") or cfg.domains or cfg.unseen_fraction > 0 or cfg.quantity_skew > 0:
            raise DataError(f"{KEY}: {path} partitions the data itself (it returned one set per silo), so "
                            "data.partition, domains, unseen_fraction and quantity_skew do not apply; return one "
                            "pooled Dataset to use them")
    test_set = materialize(test, "test", f"{KEY}: {path} test set")
    if pooled:
        pool = materialize(train, "pool", f"{KEY}: {path} training set")
        all_labels = [pool.labels]
    else:
        all_labels = [labels_of(d, f"{KEY}: {path} training set {i}") for i, d in enumerate(train)]
    names = _class_names(cfg, test, [test_set.labels, *all_labels], path)
    num_classes = len(names)
    g = make_generator(seed, 9)
    if pooled:
        if centers is not None:  # partition natural: silo i is the i-th centre
            parts = natural_parts(centers, num_silos, f"{KEY}: {path}")
            if cfg.unseen_fraction > 0:
                seen = P.seen_classes(num_silos, num_classes, float(cfg.unseen_fraction), g)
                parts = P.restrict_unseen(pool.labels, parts, seen)
        else:
            parts = P.split_pool(cfg, num_silos, num_classes, pool.labels, None, None, g, f"{KEY}: {path}")
        silos: list[Any] = [pool.subset(p) for p in parts]
    else:
        silos = [materialize(d, "", f"{KEY}: {path} training set {i}") if i in wanted else None
                 for i, d in enumerate(train)]
    out_train: list[SiloDataset | None] = []
    for i, ds in enumerate(silos):
        noisy = None
        if cfg.label_noise > 0:  # drawn for every silo, built or not, so each silo's noise is fixed
            clean = ds.labels if ds is not None else all_labels[i]
            noisy = P.symmetric_label_noise(clean, float(cfg.label_noise), num_classes, g)
        if i not in wanted or ds is None:
            out_train.append(None)
            continue
        ds.name = f"silo{i}"
        if len(ds) == 0:
            raise DataError(f"{KEY}: {path}: silo {i} has no training samples")
        if noisy is not None:
            ds.clean_labels, ds.labels = ds.labels, noisy
        ds.images = to_channels(ds.images, cfg.channels)
        out_train.append(ds)
    test_set.images = to_channels(test_set.images, cfg.channels)
    shapes = {tuple(d.images.shape[1:]) for d in [*out_train, test_set] if d is not None}
    if len(shapes) > 1:
        raise DataError(f"{KEY}: {path} returned images of different shapes {sorted(shapes)}; every set must "
                        "have the same C×H×W")
    return FederatedData(out_train, test_set, num_classes, names)


def _centers(centers: Any, train: Any, path: str) -> np.ndarray:
    """The factory's per-sample centres: one int per sample of the pooled training set."""
    where = f"{KEY}: {path}"
    if not _is_dataset(train):
        raise DataError(f"{where} returned centers with a list of per-silo sets; centers go with one pooled training "
                        "set (a list of sets already makes each set a silo)")
    try:
        c = np.asarray(centers).reshape(-1)
    except (TypeError, ValueError):
        c = np.asarray([])
    if c.shape[0] != len(train) or not np.issubdtype(c.dtype, np.integer):
        raise DataError(f"{where}: centers must hold one int per training sample ({len(train)}), got "
                        f"{type(centers).__name__} of {c.shape[0]} {c.dtype}")
    return c


def _class_names(cfg, test: Any, labels: list[torch.Tensor], path: str) -> tuple[str, ...]:
    top = max(int(y.max()) for y in labels if y.numel())
    low = min(int(y.min()) for y in labels if y.numel())
    if low < 0:
        raise DataError(f"{KEY}: {path} returned a negative class label {low}")
    given = cfg.classes or getattr(test, "classes", None)
    if isinstance(given, int) and not isinstance(given, bool):  # a class count rather than names
        given = [str(i) for i in range(given)]
    if given and isinstance(given, (list, tuple)):
        if top >= len(given):
            raise DataError(f"{KEY}: {path} returned class {top} but {len(given)} classes are named "
                            f"({'data.classes' if cfg.classes else 'test_set.classes'})")
        return tuple(str(c) for c in given)
    return tuple(str(i) for i in range(max(top + 1, 2)))
