"""Which test samples lie in the union of the silos' (domain, class) cells, and the
``data.label: source`` task (the label is the image's domain)."""

from __future__ import annotations

import pytest
import torch

from fedsim.data import DOMAINS, DataConfig, carve_validation, cell_counts, in_union, load_federated


def training_cells(train) -> set[tuple[int, int]]:
    """The reference: every (domain, clean class) pair some silo's training data holds."""
    return {(d, c) for ds in train for d, c in zip(ds.domain.tolist(), ds.clean_labels.tolist())}


@pytest.mark.parametrize("settings", [
    {"unseen_fraction": 1.0},
    {"unseen_fraction": 0.5, "label_noise": 0.3},
    {"unseen_fraction": 1.0, "partition": "dirichlet"},
])
def test_in_union_splits_the_test_set_by_the_cells_of_the_silos_training_data(settings):
    cfg = DataConfig(samples_per_silo=40, image_size=16, test_samples=96, **settings)
    fd = load_federated(cfg, 4, 3)
    train, _ = carve_validation(fd.train, 0.25, 3)  # the silos train on what validation leaves
    cells = training_cells(train)
    inside = in_union(fd.test, cell_counts(train, fd.num_classes))
    test_cells = list(zip(fd.test.domain.tolist(), fd.test.clean_labels.tolist()))
    want_in = {j for j, cell in enumerate(test_cells) if cell in cells}
    got_in = set(inside.nonzero().flatten().tolist())
    got_out = set((~inside).nonzero().flatten().tolist())
    assert got_in == want_in
    assert got_in.isdisjoint(got_out) and got_in | got_out == set(range(len(fd.test)))
    # the test set covers every cell, so the in-union side meets every training cell and no other
    assert {test_cells[j] for j in got_in} == cells
    assert got_out  # unseen labels leave cells no silo holds
    if cfg.label_noise:  # a flipped label does not put an image in another class's cell
        noisy = {(d, c) for ds in train for d, c in zip(ds.domain.tolist(), ds.labels.tolist())}
        assert noisy > cells


def test_with_every_label_seen_no_test_sample_is_outside_the_union():
    cfg = DataConfig(samples_per_silo=48, image_size=16, test_samples=48, unseen_fraction=0.0)
    fd = load_federated(cfg, 4, 0)
    assert bool(in_union(fd.test, cell_counts(fd.train, fd.num_classes)).all())


def test_source_label_is_the_domain_index_and_the_classes_are_the_four_domains():
    cfg = DataConfig(samples_per_silo=40, image_size=16, test_samples=40, label="source", label_noise=0.2)
    fd = load_federated(cfg, 4, 0)
    assert fd.num_classes == len(DOMAINS) and fd.class_names == DOMAINS
    for ds in [*fd.train, fd.test]:
        assert torch.equal(ds.clean_labels, ds.domain)
    assert any(not torch.equal(ds.labels, ds.domain) for ds in fd.train)  # the noise flips sources
    assert torch.equal(fd.test.labels, fd.test.domain)
    assert torch.bincount(fd.test.labels).tolist() == [10] * 4  # balanced over the sources


def test_source_label_counts_only_the_domains_in_use():
    cfg = DataConfig(samples_per_silo=20, image_size=16, test_samples=12, label="source",
                     domains=["phantom", {"human": 0.5, "phantom": 0.5}])
    fd = load_federated(cfg, 2, 0)
    assert fd.num_classes == 2 and fd.class_names == ("human", "phantom")
    position = {DOMAINS.index("human"): 0, DOMAINS.index("phantom"): 1}
    for ds in [*fd.train, fd.test]:
        assert ds.labels.tolist() == [position[d] for d in ds.domain.tolist()]
    assert set(fd.test.domain.tolist()) == set(position)  # a domain no silo holds is no class


def test_source_label_with_every_label_unseen_gives_each_silo_its_own_source():
    cfg = DataConfig(samples_per_silo=24, image_size=16, test_samples=8, label="source", partition="iid",
                     unseen_fraction=1.0)
    fd = load_federated(cfg, 4, 0)
    for i, ds in enumerate(fd.train):  # home sources dealt round-robin: silo i holds domain i alone
        assert set(ds.domain.tolist()) == {i} and torch.equal(ds.labels, ds.domain)
    half = load_federated(DataConfig(samples_per_silo=24, image_size=16, test_samples=8, label="source",
                                     partition="iid", unseen_fraction=0.0), 4, 0)
    assert all(set(ds.domain.tolist()) == set(range(4)) for ds in half.train)


@pytest.mark.parametrize("case", ["unseen_with_mixtures", "mixtures_with_iid", "segmentation", "torchvision",
                                  "one_domain", "unknown"])
def test_a_label_setting_that_makes_no_sense_is_one_line_and_exit_2(tmp_path, case, capsys):
    from fedsim.cli import main

    args = {
        "unseen_with_mixtures": ["data.label=source", "data.unseen_fraction=0.5"],
        "mixtures_with_iid": ["data.label=source", "data.unseen_fraction=0", "data.partition=iid"],
        "segmentation": ["data.label=source", "data.unseen_fraction=0", "task=segmentation"],
        "torchvision": ["data.label=source", "data.unseen_fraction=0", "data.kind=torchvision", "data.domains=null",
                        f"data.root={tmp_path}", "data.name=MNIST"],
        "one_domain": ["data.label=source", "data.unseen_fraction=0", "data.domains=[human, human, human, human]"],
        "unknown": ["data.label=shape"],
    }[case]
    code = main(["run", *[x for a in args for x in ("--set", a)], "--set", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("fedsim: error: ") and "label" in err
    assert not (tmp_path / "runs").exists()
