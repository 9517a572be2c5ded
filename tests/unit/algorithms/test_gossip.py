"""Gossip mixing rows: Metropolis–Hastings weights and idle arcs."""

from __future__ import annotations

import numpy as np

from fedsim.algorithms.gossip import metropolis_hastings
from fedsim.topology import make_topology, parse_topology


def test_metropolis_hastings_is_doubly_stochastic_on_undirected_graphs():
    topo = make_topology("random-regular", 8, degree=3)
    W = np.zeros((8, 8))
    for i, row in metropolis_hastings(topo).items():
        for j, w in row.items():
            W[i, j] = w
    assert np.allclose(W.sum(0), 1) and np.allclose(W.sum(1), 1) and np.allclose(W, W.T)
    assert (W >= 0).all()


def test_star_hub_and_leaf_weights_by_hand():
    W = metropolis_hastings(make_topology("star", 4))
    assert W[1] == {0: 1 / 4, 1: 3 / 4}  # leaf: 1/(1+max(1, 3))
    assert W[0] == {1: 1 / 4, 2: 1 / 4, 3: 1 / 4, 0: 1 / 4}


def test_an_idle_in_neighbour_leaves_its_weight_with_the_silo():
    from fedsim.algorithms.gossip import Gossip

    topo = parse_topology({"silos": 3, "directed": False, "edges": [[0, 1], [1, 2], [2, 0]]})
    gossip = Gossip.__new__(Gossip)  # only the mixing rows are exercised here
    gossip.W = metropolis_hastings(topo)
    row = gossip.row(0, received={1: None})  # silo 2's arc is idle this round
    assert row.keys() == {0, 1}
    assert np.isclose(row[0], 2 / 3) and np.isclose(row[1], 1 / 3) and np.isclose(sum(row.values()), 1)
