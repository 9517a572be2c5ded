"""Decentralized gossip / D-PSGD: local SGD steps, then Metropolis–Hastings mixing with the
in-neighbours of the topology (θ_i ← Σ_j W_ij θ_j; under a robust ``aggregation:`` the rule over
the same models with the W_ij as weights)."""

from __future__ import annotations

import torch

from fedsim.aggregation import Aggregation, combine_local
from fedsim.algorithms.base import Algorithm
from fedsim.federation import load_state_tensors, state_tensors
from fedsim.topology import Topology


def metropolis_hastings(topology: Topology) -> dict[int, dict[int, float]]:
    """W_ij = 1 / (1 + max(d_i, d_j)) for j ∈ N_in(i), W_ii = 1 − Σ_j W_ij (d = in-degree).

    Row-stochastic on any graph; symmetric and doubly stochastic when the topology is undirected.
    """
    W: dict[int, dict[int, float]] = {}
    for i in range(topology.num_silos):
        row = {
            j: 1.0 / (1 + max(topology.in_degree(i), topology.in_degree(j)))
            for j in topology.in_neighbours(i)
        }
        row[i] = 1.0 - sum(row.values())
        W[i] = row
    return W


def mix(own: list[torch.Tensor], weights: dict[int, float], self_id: int,
        received: dict[int, list[torch.Tensor]], rule: Aggregation | None = None) -> list[torch.Tensor]:
    """Σ_j W_ij θ_j over floating tensors, accumulated in float64 in a fixed order (self, then j
    ascending) so the result does not depend on placement; integer buffers keep the silo's own
    value. Under a robust ``rule`` (``aggregation:``) the same inputs and weights go through it
    instead (e.g. the weighted median with the W_ij as weights: :mod:`fedsim.aggregation`)."""
    if rule is not None and not rule.is_mean:
        return combine_local(rule, own, weights, self_id, received)
    out = []
    for k, t in enumerate(own):
        if not t.is_floating_point():
            out.append(t)
            continue
        acc = weights[self_id] * t.double()
        for j in sorted(received):
            acc += weights[j] * received[j][k].double()
        out.append(acc.to(t.dtype))
    return out


def gossip_row(row: dict[int, float], i: int, received) -> dict[int, float]:
    """W_i restricted to this round's messages: the weight of an in-neighbour whose arc is idle
    (multigraph weak arc, MATCHA matching not drawn) stays with silo i, so the row still sums
    to 1."""
    w = dict(row)
    for j in [j for j in w if j != i and j not in received]:
        w[i] += w.pop(j)
    return w


class Gossip(Algorithm):
    name = "gossip"
    title = "Gossip"
    tasks = ("classification", "segmentation")

    @classmethod
    def mix_inputs(cls, cfg, scenario, graph, silo: int) -> int | None:
        return 1 + graph.in_degree(silo) if scenario.decentralized else None

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self.W = metropolis_hastings(fed.topology)

    def row(self, i: int, received) -> dict[int, float]:
        return gossip_row(self.W[i], i, received)

    def round(self, k: int) -> dict[int, float]:
        losses = self.local_training()
        if not self.exchanges:
            return losses
        silos = self.fed.silos
        got = self.fed.exchange(self.fed.active_arcs(k), lambda j, i: state_tensors(silos[j].model))
        mixed = {}  # every update is computed before any model changes (messages may alias models)
        for i, silo in silos.items():
            received = {j: t for (j, dst), t in got.items() if dst == i}
            mixed[i] = mix(state_tensors(silo.model), self.row(i, received), i, received, self.fed.aggregation)
        for i, silo in silos.items():
            load_state_tensors(silo.model, mixed[i])
        return losses
