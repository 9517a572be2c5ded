"""Transport and aggregation through real spawned gloo process groups."""

from __future__ import annotations

import copy

import pytest
import torch

from fedsim.distributed import Placement
from fedsim.launch import spawn
from fedsim.topology import make_topology
from fedsim.transport import (
    Transport,
    flatten_state,
    message_bytes,
    pack,
    saveable_state,
    unpack,
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


def test_colocated_handoff_needs_no_network_and_is_counted():
    placement = Placement(2, 1)  # no process group: a hand-off must not touch torch.distributed
    transport = Transport(placement, 0, torch.device("cpu"))
    sent = [torch.ones(4)]
    got = transport.exchange({(0, 1): sent}, {(0, 1): [torch.empty(4)]})
    assert torch.equal(got[(0, 1)][0], sent[0])
    assert transport.take_bytes() == {(0, 1): 16} and transport.take_bytes() == {}
    assert transport.network_bytes == 0


def test_flat_model_state_is_sent_without_a_copy_and_trains_normally():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 4 * 4, 5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flatten_state(model)
    state = list(model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    buf = pack([state], torch.device("cpu"))
    assert buf.data_ptr() == state[0].data_ptr()  # the model's own storage, no copy
    copy = pack([[t.clone() for t in state]], torch.device("cpu"))
    assert torch.equal(buf, copy)
    unpacked = unpack(copy, [state])[0]
    assert all(torch.equal(a, b) for a, b in zip(unpacked, state))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 1, 6, 6)).sum().backward()
    opt.step()
    assert not torch.equal(state[0], before["0.weight"])  # the step wrote into the flat buffer


def test_flat_model_with_several_batchnorms_trains_and_saves(tmp_path):
    # each BatchNorm updates its running statistics in place during the forward and saves them
    # for backward: with the tensors as views of one buffer (one shared version counter) the
    # second layer's update invalidated the first's, and torch.save refused the mixed dtypes
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                                torch.nn.Conv2d(3, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 2 * 2, 5))
    reference = copy.deepcopy(model)
    flatten_state(model)
    state = list(model.state_dict().values())
    assert pack([state], torch.device("cpu")).data_ptr() == state[0].data_ptr()  # still zero-copy
    x = torch.randn(4, 1, 6, 6)
    for m in (model, reference):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for (k, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    torch.save(saveable_state(model), tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    assert loaded["1.num_batches_tracked"].item() == 2


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
