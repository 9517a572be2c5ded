"""``data.kind: medmnist`` on small files written here in MedMNIST's exact layout, and
``data.partition: natural`` (MedMNIST-style ``train_centers``, a python factory's ``centers``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.config import load_config
from fedsim.config.medmnist import FLAGS, RECORD
from fedsim.data import DataConfig, load_federated
from fedsim.data.rank import load_rank_data
from fedsim.errors import ConfigError, DataError
from fedsim.plan import build_plan


def write_medmnist(root, flag="bloodmnist", size=28, n=(60, 20, 30), centers=None, seed=0, labels_shape=1):
    """A MedMNIST file: uint8 images (N, H, W[, 3]), int labels (N, 1); each image's first pixel
    is its index in its split (so a test can find where every image went)."""
    rng = np.random.default_rng(seed)
    info = FLAGS.get(flag)
    channels = info.channels if info else 1
    classes = len(info.labels) if info else 2
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size) if channels == 1 else (count, size, size, 3)
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        x.reshape(count, -1)[:, 0] = np.arange(count) % 256
        arrays[f"{split}_images"] = x
        arrays[f"{split}_labels"] = rng.integers(0, classes, (count, labels_shape))
    if centers is not None:
        arrays["train_centers"] = rng.choice(centers, n[0])
        arrays["val_centers"] = rng.choice(centers, n[1])
    name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    np.savez(root / name, **arrays)
    return {k: v for k, v in arrays.items()}


def cfg(root, **kw):
    return DataConfig(kind="medmnist", root=str(root), flag=kw.pop("flag", "bloodmnist"), **kw)


def _first_pixels(ds):
    """The first pixel of every image as its 8-bit level: the index the writer put there."""
    return (ds.images[:, 0, 0, 0] * 255).round().long().tolist()


def test_official_splits_kept_labels_named_and_pooled_train_split_by_a_partitioner(tmp_path):
    arrays = write_medmnist(tmp_path, n=(60, 20, 30))
    fd = load_federated(cfg(tmp_path, partition="iid"), 3, seed=0)
    info = FLAGS["bloodmnist"]
    assert fd.num_classes == len(info.labels) and fd.class_names == info.labels
    assert fd.class_names[3].startswith("immature granulocytes")
    # the test set is MedMNIST's test split, RGB, in order, scaled to [0, 1]
    want = torch.from_numpy(arrays["test_images"]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(fd.test.images, want)
    assert fd.test.labels.tolist() == arrays["test_labels"].reshape(-1).tolist()
    # every training image lands in exactly one silo, every validation image in one silo's validation set
    assert sorted(p for ds in fd.train for p in _first_pixels(ds)) == list(range(60))
    assert sorted(p for ds in fd.val for p in _first_pixels(ds)) == list(range(20))
    for ds in fd.train:
        idx = torch.tensor(_first_pixels(ds))
        assert torch.equal(ds.labels, torch.from_numpy(arrays["train_labels"].reshape(-1))[idx])
        assert torch.equal(ds.images, torch.from_numpy(arrays["train_images"][idx.numpy()]).permute(0, 3, 1, 2)
                           .float() / 255)
    # iid over the 80 pooled images: every silo within one image of its share
    assert all(abs(len(t) + len(v) - 80 / 3) < 1 for t, v in zip(fd.train, fd.val))


def test_sizes_other_than_28_read_flag_size_npz_and_grayscale_has_one_channel(tmp_path):
    write_medmnist(tmp_path, flag="pneumoniamnist", size=64, n=(12, 4, 6))
    fd = load_federated(cfg(tmp_path, flag="pneumoniamnist", size=64, partition="iid"), 2, seed=0)
    assert fd.test.images.shape == (6, 1, 64, 64) and fd.class_names == ("normal", "pneumonia")


def test_natural_partition_makes_each_centre_a_silo(tmp_path):
    arrays = write_medmnist(tmp_path, n=(60, 20, 10), centers=[3, 7, 9])
    fd = load_federated(cfg(tmp_path, partition="natural"), 3, seed=0)
    for silo, centre in enumerate([3, 7, 9]):  # sorted centre ids
        assert sorted(_first_pixels(fd.train[silo])) == np.flatnonzero(arrays["train_centers"] == centre).tolist()
        assert sorted(_first_pixels(fd.val[silo])) == np.flatnonzero(arrays["val_centers"] == centre).tolist()
    with pytest.raises(DataError, match="3 centres .* but the run has 4 silos"):
        load_federated(cfg(tmp_path, partition="natural"), 4, seed=0)


def test_the_rank_validates_on_medmnists_own_split(tmp_path):
    write_medmnist(tmp_path, n=(40, 16, 8), centers=[0, 1, 2, 3])
    c = load_config(None, ["topology=ring-4", "algorithm=fedavg", "downstream.enabled=false", "compare_with=[]",
                           "data.kind=medmnist",
                           "data.flag=bloodmnist", f"data.root={tmp_path}", "data.partition=natural",
                           "data.domains=null", "data.unseen_fraction=0", f"output_dir={tmp_path}"])
    plan = build_plan(c, tmp_path / "run", 1)
    data = load_rank_data(plan, 0)
    full = load_federated(c.data, 4, c.seed)
    assert [len(v) for v in data.val] == [len(v) for v in full.val] and sum(map(len, data.val)) == 16


@pytest.mark.parametrize("flag,match", [("chestmnist", "multi-label"), ("organmnist3d", "3-D volumes"),
                                        ("mnist", "choose one of pathmnist")])
def test_unsupported_flags_are_one_line(tmp_path, flag, match):
    with pytest.raises(DataError, match=match):
        cfg(tmp_path, flag=flag).validate()


def test_missing_file_says_where_to_put_it_and_where_medmnist_publishes_it(tmp_path):
    with pytest.raises(DataError) as err:
        load_federated(cfg(tmp_path, size=128, partition="iid"), 2, seed=0)
    msg = str(err.value)
    assert str(tmp_path / "bloodmnist_128.npz") in msg and RECORD in msg and "\n" not in msg
    assert RECORD == "https://zenodo.org/records/10519652"


def test_malformed_files_are_one_line(tmp_path):
    write_medmnist(tmp_path, n=(10, 4, 4), labels_shape=3)  # a multi-label array
    with pytest.raises(DataError, match="multi-label"):
        load_federated(cfg(tmp_path, partition="iid"), 2, seed=0)
    write_medmnist(tmp_path, n=(10, 4, 4))
    with pytest.raises(DataError, match="needs train_centers"):
        load_federated(cfg(tmp_path, partition="natural"), 2, seed=0)
    np.savez(tmp_path / "bloodmnist.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8))
    with pytest.raises(DataError, match="has no train_labels"):
        load_federated(cfg(tmp_path, partition="iid"), 2, seed=0)


def test_natural_needs_data_that_carry_centres():
    with pytest.raises(DataError, match="natural splits by each sample's centre"):
        DataConfig(partition="natural").validate()
    with pytest.raises(DataError, match="validation split"):
        DataConfig(kind="medmnist", flag="pathmnist", root="/x", validation_fraction=0.1).validate()


def test_centres_must_match_the_topology_before_any_rank_starts(tmp_path):
    write_medmnist(tmp_path, n=(30, 9, 6), centers=[0, 1, 2])
    with pytest.raises(ConfigError, match="3 centres but the topology has 4 silos"):
        build_plan(load_config(None, [
            "topology=ring-4", "algorithm=fedavg", "downstream.enabled=false", "compare_with=[]", "data.kind=medmnist",
            "data.flag=bloodmnist", f"data.root={tmp_path}", "data.partition=natural", "data.domains=null",
            "data.unseen_fraction=0"]), tmp_path / "run", 1)


# ---- a python factory's centres -------------------------------------------------------------------

def centre_factory(num_silos, seed, centres=(5, 1, 5, 2, 1, 2, 5, 1), wrong=False):
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 4, 4) / 10
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    train = torch.utils.data.TensorDataset(x, y)
    test = torch.utils.data.TensorDataset(x[:4], y[:4])
    return train, test, list(centres)[:7] if wrong else list(centres)


def test_python_factory_centres_are_the_silos(tmp_path):
    c = DataConfig(kind="python", factory="tests.unit.data.test_medmnist:centre_factory", partition="natural")
    fd = load_federated(c, 3, seed=0)
    for silo, centre in enumerate([1, 2, 5]):
        want = [i for i, k in enumerate((5, 1, 5, 2, 1, 2, 5, 1)) if k == centre]
        assert (fd.train[silo].images[:, 0, 0, 0] * 10).round().long().tolist() == want
    with pytest.raises(DataError, match="3 centres .* but the run has 2 silos"):
        load_federated(c, 2, seed=0)
    with pytest.raises(DataError, match="one int per training sample"):
        load_federated(DataConfig(kind="python", factory="tests.unit.data.test_medmnist:centre_factory",
                                  partition="natural", args={"wrong": True}), 3, seed=0)
    with pytest.raises(DataError, match="set data.partition: natural"):
        load_federated(DataConfig(kind="python", factory="tests.unit.data.test_medmnist:centre_factory",
                                  partition="iid"), 3, seed=0)
