"""MedMNIST read from its own files (``data.kind: medmnist``): ``root/{flag}.npz`` (28 px) or
``root/{flag}_{size}.npz`` (64, 128, 224), as MedMNIST publishes them, read with numpy (no
``medmnist`` package).

Layout (MedMNIST's): ``train_images``, ``val_images``, ``test_images`` uint8 (N, H, W) grayscale or
(N, H, W, 3) RGB; ``train_labels``, ``val_labels``, ``test_labels`` int (N, 1). The splits stay
MedMNIST's: the training and validation images are partitioned over the silos together (so a
silo's validation share follows its own training data) and each silo validates on its share of
the official validation split; the official test split is the run's test set. Class names and
the task come from MedMNIST's metadata (:mod:`fedsim.config.medmnist`).

``data.partition: natural``: the file also holds ``train_centers`` and ``val_centers`` (an int
per image: the centre, hospital or scanner it came from); silo i is the i-th centre in sorted id
order, and there must be as many centres as silos. Any other partition splits the pooled images
with fedsim's partitioners (iid, dirichlet, quantity, unseen classes, label noise).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from fedsim.config.medmnist import FLAGS, RECORD, SPLIT_KEYS, file_name
from fedsim.errors import DataError

from . import partition as P
from .dataset import FederatedData, SiloDataset, to_channels
from .synthetic import make_generator

CENTER_KEYS = ("train_centers", "val_centers")


def medmnist_path(cfg) -> Path:
    """The file ``data.flag`` / ``data.size`` name under ``data.root``."""
    return Path(cfg.root).expanduser() / file_name(cfg.flag, int(cfg.size))


def open_file(cfg) -> np.lib.npyio.NpzFile:
    """The .npz of ``cfg`` (arrays read when indexed), every official key present; a missing or
    unreadable file is one line naming the path and where MedMNIST publishes it."""
    path = medmnist_path(cfg)
    if not path.is_file():
        raise DataError(f"data.kind medmnist: {path} not found; put MedMNIST's {file_name(cfg.flag, int(cfg.size))} "
                        f"there (MedMNIST publishes it at {RECORD})")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"data.kind medmnist: cannot read {path} ({exc}); download it again from {RECORD}") from None
    missing = [k for k in SPLIT_KEYS if k not in npz.files]
    if missing:
        npz.close()
        raise DataError(f"data.kind medmnist: {path} has no {missing[0]}; a MedMNIST file holds "
                        f"{', '.join(SPLIT_KEYS)}")
    return npz


def read_centers(cfg, npz) -> tuple[np.ndarray, np.ndarray]:
    """``train_centers`` and ``val_centers`` of the file (partition natural), checked: ints, one
    per image of their split."""
    path = medmnist_path(cfg)
    out = []
    for key, images in zip(CENTER_KEYS, ("train_images", "val_images")):
        if key not in npz.files:
            raise DataError(f"data.partition natural needs {key} in {path} (an int per image: the centre it came "
                            "from); add it, or choose another data.partition")
        c = np.asarray(npz[key]).reshape(-1)
        n = npz[images].shape[0]
        if c.shape[0] != n or not np.issubdtype(c.dtype, np.integer):
            raise DataError(f"{path}: {key} must hold one int per image of {images} ({n}), got {c.dtype} {c.shape}")
        out.append(c)
    return out[0], out[1]


def count_centers(cfg) -> int:
    """How many centres the file's ``train_centers`` and ``val_centers`` name (partition natural),
    read without the images: what the topology's silo count must equal."""
    with open_file(cfg) as npz:
        train, val = read_centers(cfg, npz)
    return len(np.union1d(train, val))


def _split(npz, split: str, path: Path, size: int, channels: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels (N,) of one split, checked against the flag."""
    x = np.asarray(npz[f"{split}_images"])
    y = np.asarray(npz[f"{split}_labels"])
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (size, size, channels):
        raise DataError(f"{path}: {split}_images is {x.dtype} {x.shape}; this flag at data.size {size} is uint8 "
                        f"(N, {size}, {size}{', 3' if channels == 3 else ''})")
    if y.ndim == 2 and y.shape[1] != 1:
        raise DataError(f"{path}: {split}_labels has {y.shape[1]} labels per image (a multi-label file); fedsim "
                        "trains one class per image")
    y = y.reshape(-1)
    if y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {split}_labels must hold one int per image ({x.shape[0]}), got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"{path}: {split}_labels holds class {int(y.max() if y.max() >= classes else y.min())}; "
                        f"this flag has classes 0..{classes - 1}")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y.astype(np.int64))


def natural_parts(centers: np.ndarray, num_silos: int, source: str) -> list[torch.Tensor]:
    """Indices of each silo's samples when silo i is the i-th centre id in sorted order; as many
    centres as silos, or one line."""
    ids = np.unique(centers)
    if len(ids) != num_silos:
        raise DataError(f"{source}: the data come from {len(ids)} centres ({', '.join(map(str, ids[:8]))}"
                        f"{', …' if len(ids) > 8 else ''}) but the run has {num_silos} silos; use a topology with "
                        f"{len(ids)} silos for data.partition natural")
    c = torch.as_tensor(np.asarray(centers, dtype=np.int64))
    return [(c == int(i)).nonzero().squeeze(1) for i in ids]


def load_medmnist(cfg, num_silos: int, seed: int, wanted: set[int]) -> FederatedData:
    info = FLAGS[cfg.flag]
    path = medmnist_path(cfg)
    size, classes = int(cfg.size), len(info.labels)
    with open_file(cfg) as npz:
        splits = {s: _split(npz, s, path, size, info.channels, classes) for s in ("train", "val", "test")}
        centers = read_centers(cfg, npz) if cfg.partition == "natural" else None
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits["train"], splits["val"], splits["test"]
    # the training and validation images are split together: a silo's validation share then
    # follows its own data (its centre, its label skew); each keeps the split it came from
    labels = torch.cat([y_tr, y_va])
    from_val = torch.cat([torch.zeros(len(y_tr), dtype=torch.bool), torch.ones(len(y_va), dtype=torch.bool)])
    source = f"MedMNIST {cfg.flag} at {path}"
    g = make_generator(seed, 11)
    if centers is not None:
        parts = natural_parts(np.concatenate(centers), num_silos, source)
        if cfg.unseen_fraction > 0:
            parts = P.restrict_unseen(labels, parts, P.seen_classes(num_silos, classes, float(cfg.unseen_fraction), g))
    else:
        parts = P.split_pool(cfg, num_silos, classes, labels, None, None, g, source)
    x_pool = torch.cat([x_tr, x_va])

    def as_float(x: torch.Tensor) -> torch.Tensor:
        return to_channels(x.float().div_(255.0), cfg.channels)

    train: list[SiloDataset | None] = []
    val: list[SiloDataset | None] = []
    for i, p in enumerate(parts):
        own_train, own_val = p[~from_val[p]], p[from_val[p]]
        clean = labels[own_train]
        noisy = (P.symmetric_label_noise(clean, float(cfg.label_noise), classes, g)
                 if cfg.label_noise > 0 else clean)  # drawn for every silo, built or not
        if len(own_train) == 0:
            raise DataError(f"{source}: silo {i} has no training images after partitioning")
        if i not in wanted:
            train.append(None)
            val.append(None)
            continue
        train.append(SiloDataset(as_float(x_pool[own_train]), None, noisy, None, None, None, clean, f"silo{i}"))
        val.append(SiloDataset.from_tensors(as_float(x_pool[own_val]), labels[own_val], f"silo{i}-val"))
    test = SiloDataset.from_tensors(as_float(x_te), y_te, "test")
    return FederatedData(train, test, classes, info.labels, val=val)
