"""Θ's test accuracy split into the samples inside and outside the union of the silos'
(domain, class) cells recombines to the whole test set's accuracy."""

from __future__ import annotations

import pytest
import torch

from fedsim.evaluation import split_accuracy


def test_split_accuracy_recombines_to_the_accuracy_over_the_whole_set():
    g = torch.Generator().manual_seed(0)
    hits = torch.rand(101, generator=g) < 0.6
    inside = torch.rand(101, generator=g) < 0.3
    got = split_accuracy(hits, inside)
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    assert got["foundation_accuracy_in_union"] == sum(h for h, i in zip(hits.tolist(), inside.tolist()) if i) / n_in
    whole = got["foundation_accuracy_in_union"] * n_in + got["foundation_accuracy_out_of_union"] * n_out
    assert whole / 101 == pytest.approx(int(hits.sum()) / 101, abs=1e-15)
    everything = split_accuracy(hits, torch.ones(101, dtype=torch.bool))
    assert everything == {"foundation_accuracy_in_union": int(hits.sum()) / 101,
                          "foundation_accuracy_out_of_union": None}  # an empty side has no accuracy
