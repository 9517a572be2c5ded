"""data.kind: torchvision — MNIST read from a root written here in MNIST's own on-disk format."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.data import DataConfig, load_federated
from fedsim.errors import DataError


def write_mnist(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte: the IDX files torchvision reads."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
        out[split] = (images, labels)
    return out


@pytest.fixture()
def mnist(tmp_path):
    files = write_mnist(tmp_path / "mnist")
    return tmp_path / "mnist", files


def cfg(root, **kw) -> DataConfig:
    return DataConfig(kind="torchvision", name="MNIST", root=str(root), **kw)


def test_mnist_read_from_a_local_root(mnist):
    root, files = mnist
    fd = load_federated(cfg(root, partition="iid"), 3, seed=0)
    images, labels = files["train"]
    assert fd.num_classes == 10 and fd.in_channels == 1 and fd.class_names[3] == "3 - three"
    assert [len(d) for d in fd.train] == [20, 20, 20]
    # every training image lands in exactly one silo, pixel for pixel (bytes / 255)
    got = torch.cat([d.images for d in fd.train])
    want = torch.from_numpy(images).float().div(255).unsqueeze(1)
    assert got.shape[1:] == (1, 28, 28)
    assert sorted(map(bytes, (got * 255).round().to(torch.uint8).numpy())) == sorted(
        map(bytes, (want * 255).round().to(torch.uint8).numpy()))
    test_images, test_labels = files["t10k"]
    assert torch.equal(fd.test.images, torch.from_numpy(test_images).float().div(255).unsqueeze(1))
    assert torch.equal(fd.test.labels, torch.from_numpy(test_labels).long())
    # a rank that hosts silo 1 only builds the same silo 1
    alone = load_federated(cfg(root, partition="iid"), 3, seed=0, silos=[1])
    assert alone.train[0] is None and torch.equal(alone.train[1].images, fd.train[1].images)
    rgb = load_federated(cfg(root, partition="iid", channels=3), 3, seed=0)
    assert rgb.in_channels == 3 and torch.equal(rgb.train[0].images[:, 2], fd.train[0].images[:, 0])


def test_partitioners_apply(mnist):
    root, files = mnist
    labels = torch.from_numpy(files["train"][1]).long()
    unseen = load_federated(cfg(root, partition="iid", unseen_fraction=1.0), 2, seed=0)
    for i, d in enumerate(unseen.train):  # f = 1: silo i keeps only its home classes c ≡ i (mod 2)
        assert set((d.labels % 2).tolist()) == {i}
    assert 0 < sum(len(d) for d in unseen.train) < len(labels)  # the unseen classes' samples are dropped
    noisy = load_federated(cfg(root, partition="iid", label_noise=0.5), 2, seed=0)
    flipped = sum(int((d.labels != d.clean_labels).sum()) for d in noisy.train)
    assert 0 < flipped < len(labels)
    dirichlet = load_federated(cfg(root, partition="dirichlet", dirichlet_alpha=0.1), 3, seed=0)
    assert sum(len(d) for d in dirichlet.train) == len(labels)
    counts = torch.stack([torch.bincount(d.labels, minlength=10) for d in dirichlet.train])
    assert torch.equal(counts.sum(0), torch.bincount(labels, minlength=10))
    quantity = load_federated(cfg(root, partition="quantity", quantity_skew=2.0), 3, seed=0)
    assert len({len(d) for d in quantity.train}) == 3 and sum(len(d) for d in quantity.train) == len(labels)
    with pytest.raises(DataError, match="attribute"):
        load_federated(cfg(root, partition="attribute"), 2, seed=0)


def test_missing_root_names_the_path_and_the_flag(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope'}.*data.download: true"):
        load_federated(cfg(tmp_path / "nope"), 2, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"{tmp_path / 'empty'}.*data.download: true"):
        load_federated(cfg(tmp_path / "empty"), 2, 0)
    with pytest.raises(DataError, match="not a torchvision.datasets class"):
        load_federated(DataConfig(kind="torchvision", name="NoSuchSet", root=str(tmp_path)), 2, 0)
