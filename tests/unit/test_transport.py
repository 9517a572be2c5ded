"""Transport without the network: a co-located hand-off is counted, and a flat model state is sent
without a copy and trains and saves normally."""

from __future__ import annotations

import copy

import torch

from fedsim.distributed import Placement
from fedsim.transport import (
    Transport,
    flatten_state,
    pack,
    saveable_state,
    unpack,
)


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
