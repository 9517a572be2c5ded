"""The silos' validation split is disjoint, complete and the same on any placement."""

from __future__ import annotations

import torch


def test_validation_split_is_disjoint_complete_and_placement_free():
    from fedsim.data import DataConfig, carve_validation, load_federated

    cfg = DataConfig(samples_per_silo=40, image_size=16, test_samples=8)
    full = load_federated(cfg, 3, 0)
    train, val = carve_validation(full.train, 0.25, 0)
    for ds, tr, va in zip(full.train, train, val):
        assert len(va) == 10 and len(tr) + len(va) == len(ds)
        both = torch.cat([tr.images, va.images]).flatten(1)
        assert torch.equal(both.sort(0).values, ds.images.flatten(1).sort(0).values)  # nothing lost or repeated
    alone = load_federated(cfg, 3, 0, silos=[2])
    _, val_alone = carve_validation(alone.train, 0.25, 0)
    assert val_alone[0] is None and torch.equal(val_alone[2].images, val[2].images)
