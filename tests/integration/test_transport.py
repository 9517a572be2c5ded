"""Transport and aggregation through real spawned gloo process groups.

The checks that need no process: tests/unit/test_transport.py."""

from __future__ import annotations

import pytest
import torch

from fedsim.distributed import Placement
from fedsim.launch import spawn
from fedsim.topology import make_topology
from fedsim.transport import (
    Transport,
    message_bytes,
    weighted_average,
)


def payload(src: int, dst: int) -> list[torch.Tensor]:
    """A message whose content names its edge; mixed dtypes and odd sizes test the packing."""
    g = torch.Generator().manual_seed(src * 100 + dst)
    return [
        torch.randn(3, 5, generator=g),
        torch.arange(7, dtype=torch.int64) * (src + 1) + dst,
        torch.randn(1, dtype=torch.float64, generator=g),
    ]


def _exchange_worker(ctx, num_silos: int, arcs: list[tuple[int, int]]):
    placement = Placement(num_silos, ctx.world_size)
    transport = Transport(placement, ctx.rank, ctx.device)
    outgoing = {(j, i): payload(j, i) for j, i in arcs if transport.is_local(j)}
    incoming = {(j, i): payload(0, 0) for j, i in arcs if transport.is_local(i)}
    got = transport.exchange(outgoing, incoming)
    return got, dict(transport.bytes_by_edge)


@pytest.mark.parametrize(
    "kind,num_silos,world",
    [("ring", 4, 4), ("star", 4, 4), ("complete", 4, 4), ("ring", 6, 2), ("complete", 6, 2)],
)
def test_exchange_delivers_exactly_what_was_sent(kind, num_silos, world):
    topo = make_topology(kind, num_silos)
    results = spawn(_exchange_worker, world, num_silos, topo.arcs)
    placement = Placement(num_silos, world)
    delivered, counted = {}, {}
    for rank, (got, bytes_by_edge) in enumerate(results):
        assert all(placement.rank_of(i) == rank for _, i in got)
        delivered.update(got)
        counted.update(bytes_by_edge)
    assert sorted(delivered) == sorted(topo.arcs)
    for (j, i), tensors in delivered.items():
        expected = payload(j, i)
        assert len(tensors) == len(expected)
        for t, e in zip(tensors, expected):
            assert t.dtype == e.dtype and torch.equal(t, e)
    assert counted == {arc: message_bytes(payload(*arc)) for arc in topo.arcs}
    assert message_bytes(payload(0, 1)) == 3 * 5 * 4 + 7 * 8 + 8


def _average_worker(ctx, num_silos, weights):
    placement = Placement(num_silos, ctx.world_size)
    states = {i: payload(i, i) for i in placement.silos_on(ctx.rank)}
    return weighted_average(states, weights, ctx.device)


def test_weighted_average_matches_sequential_mean():
    weights = {0: 1.0, 1: 0.0, 2: 3.0, 3: 2.0, 4: 1.0, 5: 0.0}  # ϑ = 0 for silos 1 and 5
    results = spawn(_average_worker, 2, 6, weights)
    total = sum(weights.values())
    for k in (0, 2):  # the float tensors
        expected = sum(w * payload(i, i)[k].double() for i, w in weights.items()) / total
        for rank_result in results:
            torch.testing.assert_close(rank_result[k].double(), expected.to(payload(0, 0)[k].dtype).double())
    ints = sum(w * payload(i, i)[1].double() for i, w in weights.items()) / total
    assert torch.equal(results[0][1], ints.round().long())
