"""Partitioners: exact domain shares, unseen labels, Dirichlet, quantity/attribute skew, noise."""

import pytest
import torch
from rich.console import Console

from fedsim.data import DOMAINS, DataConfig, load_federated
from fedsim.data import partition as P
from fedsim.errors import DataError


def gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_largest_remainder_exact():
    assert P.largest_remainder([0.74, 0.26], 100) == [74, 26]
    assert P.largest_remainder([0.74, 0.26], 7) == [5, 2]
    assert sum(P.largest_remainder([1, 1, 1], 10)) == 10
    with pytest.raises(DataError):
        P.largest_remainder([0, 0], 5)


def test_domain_mixture_exact_shares():
    cfg = DataConfig(samples_per_silo=50, test_samples=8,
                     domains=[{"human": 0.74, "animal": 0.26}, {"animal": 0.5, "simulation": 0.5}, {"phantom": 1.0}])
    fd = load_federated(cfg, 3, seed=0)
    assert fd.train[0].domain_counts() == [37, 13, 0, 0]
    assert fd.train[1].domain_counts() == [0, 25, 0, 25]
    assert fd.train[2].domain_counts() == [0, 0, 50, 0]


def test_default_domain_cycle_and_summary_table():
    fd = load_federated(DataConfig(samples_per_silo=16, test_samples=8), 5, seed=0)
    assert fd.train[2].domain_counts() == [0, 0, 16, 0]            # phantom only
    assert fd.train[4].domain_counts() == fd.train[0].domain_counts()  # cycles
    con = Console(width=200, record=True)
    con.print(fd.summary_table())
    text = con.export_text()
    assert "phantom" in text and "test" in text


@pytest.mark.parametrize("num_silos", [2, 3, 6])
def test_unseen_fraction_one_gives_disjoint_classes(num_silos):
    fd = load_federated(DataConfig(samples_per_silo=30, test_samples=8, unseen_fraction=1.0), num_silos, seed=1)
    seen = [set(ds.labels.unique().tolist()) for ds in fd.train]
    for i in range(num_silos):
        for j in range(i + 1, num_silos):
            assert not seen[i] & seen[j], (i, j, seen)
    assert set().union(*seen) == set(range(6))


def test_unseen_fraction_zero_sees_everything_and_half_in_between():
    g = gen()
    assert P.seen_classes(4, 6, 0.0, g) == [list(range(6))] * 4
    half = P.seen_classes(3, 6, 0.5, g)
    assert all(len(s) == 4 for s in half)  # 2 home + round(0.5 * 4) others


def test_dirichlet_large_alpha_is_uniform_small_alpha_is_skewed():
    labels = torch.arange(6000) % 6
    parts = P.split_dirichlet(labels, 4, 1e4, gen(), 6)
    for p in parts:
        frac = torch.bincount(labels[p], minlength=6).double() / p.numel()
        assert (frac - 1 / 6).abs().max() < 0.02
    skewed = P.split_dirichlet(labels, 4, 0.1, gen(), 6)
    fr = [torch.bincount(labels[p], minlength=6).double().max() / max(p.numel(), 1) for p in skewed]
    assert max(fr) > 0.5
    assert sum(p.numel() for p in parts) == 6000
    assert len(torch.cat(parts).unique()) == 6000

    props = P.class_proportions([list(range(6))] * 3, 6, 1e4, gen())
    assert (props - 1 / 6).abs().max() < 0.02
    fd = load_federated(DataConfig(partition="dirichlet", dirichlet_alpha=1e4, samples_per_silo=60,
                                   test_samples=8), 2, seed=0)
    for ds in fd.train:
        assert max(ds.class_counts()) - min(ds.class_counts()) <= 2


def test_quantity_skew():
    sizes = P.quantity_sizes(4, 100, 0.0, gen())
    assert sizes == [100] * 4
    skewed = P.quantity_sizes(4, 100, 1.5, gen())
    assert sum(skewed) == 400 and max(skewed) > 3 * min(skewed)
    fd = load_federated(DataConfig(partition="quantity", samples_per_silo=20, test_samples=8), 3, seed=0)
    assert sum(len(d) for d in fd.train) == 60 and len({len(d) for d in fd.train}) == 3
    parts = P.split_quantity(100, 3, 1.0, gen())
    assert sorted(torch.cat(parts).tolist()) == list(range(100))


def test_attribute_skew_orders_silos():
    fd = load_federated(DataConfig(partition="attribute", samples_per_silo=40, test_samples=8), 4, seed=0)
    means = [float(d.attribute.mean()) for d in fd.train]
    assert means == sorted(means) and means[-1] - means[0] > 0.4
    attr = torch.rand(400, generator=gen())
    parts = P.split_attribute(attr, 4, 5.0, gen())
    m = [float(attr[p].mean()) for p in parts]
    assert m == sorted(m)


def test_label_noise_rate_and_symmetry():
    labels = torch.arange(12000) % 6
    noisy = P.symmetric_label_noise(labels, 0.3, 6, gen())
    rate = float((noisy != labels).float().mean())
    assert abs(rate - 0.3) < 0.02
    flipped = noisy[noisy != labels]
    counts = torch.bincount(flipped, minlength=6).double()
    assert counts.min() / counts.max() > 0.85
    fd = load_federated(DataConfig(samples_per_silo=200, test_samples=8, label_noise=0.2), 2, seed=0)
    for ds in fd.train:
        assert 0.12 < float((ds.labels != ds.clean_labels).float().mean()) < 0.28


def test_split_domain_and_restrict_unseen():
    domain = torch.arange(400) % 4
    labels = torch.arange(400) % 6
    mix = [{"human": 0.74, "animal": 0.26}, {"phantom": 1.0}]
    parts = P.split_domain(domain, mix, [50, 60], gen())
    assert torch.bincount(domain[parts[0]], minlength=4).tolist() == [37, 13, 0, 0]
    assert torch.bincount(domain[parts[1]], minlength=4).tolist() == [0, 0, 60, 0]
    with pytest.raises(DataError, match="phantom"):
        P.split_domain(domain, [{"phantom": 1.0}], [500], gen())
    kept = P.restrict_unseen(labels, parts, [[0, 1], [2]])
    assert set(labels[kept[0]].tolist()) <= {0, 1} and set(labels[kept[1]].tolist()) <= {2}
    t = P.partition_table(labels, domain, parts)
    assert t.row_count == 2


def test_bad_config_values():
    with pytest.raises(DataError, match="partition"):
        load_federated(DataConfig(partition="bogus"), 2, 0)
    with pytest.raises(DataError, match="unseen_fraction"):
        load_federated(DataConfig(unseen_fraction=1.5), 2, 0)
    with pytest.raises(DataError, match="mars"):
        load_federated(DataConfig(domains=[{"mars": 1.0}], samples_per_silo=4, test_samples=4), 2, 0)
    with pytest.raises(DataError, match="unknown config key .data.bogus."):
        DataConfig.from_dict({"kind": "synthetic", "bogus": 1})
    assert DataConfig.from_dict({"partition": "iid"}).partition == "iid"
    assert len(DOMAINS) == 4
