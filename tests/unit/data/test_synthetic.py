"""Synthetic generator: determinism, shapes, value ranges, label semantics, speed."""

import time

import pytest
import torch

from fedsim.data import DOMAINS, DataConfig, generate, load_federated
from fedsim.errors import DataError


def test_same_seed_identical_different_seed_differs():
    a = generate(24, domains=list(DOMAINS), image_size=64, seed=7)
    b = generate(24, domains=list(DOMAINS), image_size=64, seed=7)
    c = generate(24, domains=list(DOMAINS), image_size=64, seed=8)
    for key in ("images", "masks", "labels", "tube", "domain", "attribute"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert not torch.equal(a.images, c.images)
    assert (a.images - c.images).abs().mean() > 0.01


def test_independent_of_caller_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = generate(8, image_size=64, seed=3)
        torch.set_num_threads(2)
        b = generate(8, image_size=64, seed=3)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a.images, b.images)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_types_ranges(size):
    ds = generate(12, domains={"human": 0.5, "phantom": 0.5}, image_size=size, seed=0)
    assert ds.images.shape == (12, 1, size, size) and ds.images.dtype == torch.float32
    assert ds.masks.shape == (12, size, size) and ds.masks.dtype == torch.int64
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert set(ds.masks.unique().tolist()) <= {0, 1, 2}
    assert ds.domain.tolist() == [0] * 6 + [2] * 6
    # every image shows a catheter and a guidewire
    for k in range(12):
        assert (ds.masks[k] == 1).sum() > 0 and (ds.masks[k] == 2).sum() > 0
    img, label = ds[3]
    assert img.shape == (1, size, size) and 0 <= int(label) < 6
    assert len(ds) == 12


def test_same_scene_at_any_size():
    small = generate(6, image_size=64, seed=5)
    big = generate(6, image_size=128, seed=5)
    assert torch.equal(small.labels, big.labels) and torch.equal(small.tube, big.tube)
    down = torch.nn.functional.avg_pool2d((big.masks > 0).float()[:, None], 2)[:, 0]
    # device masks agree after downsampling (same geometry, image-relative units)
    inter = ((down > 0) & (small.masks > 0)).sum()
    assert inter / (small.masks > 0).sum() > 0.6


def test_fixed_labels_and_bad_arguments():
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    ds = generate(6, image_size=32, seed=0, labels=y, tube=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.equal(ds.labels, y)
    with pytest.raises(DataError, match="unknown domain"):
        generate(4, domains=["mars"], image_size=32, seed=0)
    with pytest.raises(DataError, match="labels"):
        generate(2, image_size=32, seed=0, labels=torch.tensor([0, 9]))
    with pytest.raises(DataError, match="image_size"):
        generate(2, image_size=8, seed=0)


def test_domains_look_different():
    ds = generate(40, domains=list(DOMAINS), image_size=64, seed=1)
    mean = [float(ds.images[ds.domain == d].mean()) for d in range(4)]
    # simulation is dark, phantom bright, human/animal in between
    assert mean[3] < 0.3 < mean[1] < mean[0] < mean[2]
    noise = [float((ds.images[ds.domain == d][..., 1:] - ds.images[ds.domain == d][..., :-1]).abs().mean())
             for d in range(4)]
    assert noise[0] > 2 * noise[3]


def test_generation_speed():
    t = time.perf_counter()
    generate(1000, domains=list(DOMAINS), image_size=64, seed=0)
    dt = time.perf_counter() - t
    assert dt < 5.0, f"1000 images at 64x64 took {dt:.2f}s"


def test_load_federated_bit_identical():
    cfg = DataConfig(samples_per_silo=20, test_samples=24, unseen_fraction=0.5, label_noise=0.2)
    a = load_federated(cfg, 3, seed=11)
    b = load_federated(cfg, 3, seed=11)
    c = load_federated(cfg, 3, seed=12)
    for x, y in zip(a.train + [a.test], b.train + [b.test]):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
        assert torch.equal(x.masks, y.masks)
    assert not torch.equal(a.train[0].images, c.train[0].images)
    assert a.num_classes == 6 and len(a.train) == 3
    # the test set covers every domain and every class, with clean labels
    assert min(a.test.domain_counts()) > 0 and min(a.test.class_counts()) > 0
    assert torch.equal(a.test.labels, a.test.clean_labels)


def test_building_a_subset_of_silos_gives_the_same_tensors():
    from fedsim.data import load_public

    cfg = DataConfig(samples_per_silo=12, test_samples=8, partition="dirichlet", label_noise=0.3,
                     unseen_fraction=0.5, attribute_skew=1.0)
    full = load_federated(cfg, 4, seed=3)
    part = load_federated(cfg, 4, seed=3, silos=[2])
    assert part.train[0] is None and part.train[3] is None
    for key in ("images", "masks", "labels", "clean_labels", "attribute", "domain"):
        assert torch.equal(getattr(full.train[2], key), getattr(part.train[2], key)), key
    assert "-" in str(part.summary_table().columns[1]._cells)
    with pytest.raises(DataError, match="silo ids"):
        load_federated(cfg, 4, seed=3, silos=[4])
    pub = load_public(cfg, 48, seed=3)
    assert pub.domain_counts() == [12] * 4 and pub.class_counts() == [8] * 6
    assert not torch.equal(pub.images[:8], full.test.images[:8])


def test_erase_changes_only_the_erased_part_of_the_same_scene():
    doms = ["human", "animal", "phantom", "simulation"]
    full = generate(16, domains=doms, image_size=32, seed=3)
    no_dev = generate(16, domains=doms, image_size=32, seed=3, erase=("devices",))
    no_ves = generate(16, domains=doms, image_size=32, seed=3, erase=("vessels",))
    for other in (no_dev, no_ves):  # same scene: labels and masks untouched
        assert torch.equal(other.masks, full.masks) and torch.equal(other.labels, full.labels)
        assert torch.equal(other.tube, full.tube)
    changed = no_dev.images[:, 0] != full.images[:, 0]
    assert changed.any() and not (changed & (full.masks == 0)).any()  # only device pixels move
    assert changed[full.masks > 0].all()
    assert not torch.equal(no_ves.images, full.images)
    with pytest.raises(DataError, match="erase"):
        generate(2, seed=0, erase=("ribs",))
