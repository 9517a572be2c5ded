"""The FedEFM authors' released rule: a distributed run equals a hand-written sequential
version of ``Peer2PeerNetwork.mix`` (aioz-ai/FedEFM ``communication.py``)."""

from __future__ import annotations

import copy

import pytest
import torch

from fedsim.federation import make_optimizer

from .test_equivalence import run_distributed, sequential_setup
from .test_fedefm import _train_ce

REL = ["algorithm=fedefm_released", "fedefm_released.overseas_steps=2"]


def reference_released(overrides: list[str]) -> list[torch.nn.Module]:
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    n, s = topo.num_silos, cfg.fedefm_released.self_weight

    for _ in range(cfg.rounds):
        for i in range(n):  # "LOCAL TRAINING"
            _train_ce(models[i], opts[i], streams[i], cfg.train.local_steps)
        copies = {}
        for i in range(n):  # "TRANSMIT MODEL": i trains a copy of each neighbour on its own data
            for j in sorted(topo.in_neighbours(i)):
                c = copy.deepcopy(models[j])
                _train_ce(c, make_optimizer(c, cfg), streams[i], cfg.fedefm_released.overseas_steps)
                copies[(j, i)] = c
        new = []
        for i in range(n):  # "AGGREGATE": ½ own + Σ_j w_ij θ̂_j / 2, w_ij = 1/|N(i)|
            nb = sorted(topo.in_neighbours(i))
            state = {}
            for key, own in models[i].state_dict().items():
                acc = s * own.double()
                for j in nb:
                    acc = acc + (1 - s) / len(nb) * copies[(j, i)].state_dict()[key].double()
                state[key] = acc.float()
            new.append(state)
        for m, state in zip(models, new):
            m.load_state_dict(state)
    return models


@pytest.mark.parametrize("topology", ["ring-4", "star-4"])
def test_released_rule_equals_the_sequential_version(tmp_path, topology):
    overrides = REL + [f"topology={topology}", "name=rel"]
    got = run_distributed(tmp_path, overrides)
    want = reference_released(overrides)
    for i, model in enumerate(want):
        for a, b in zip(got[i], model.state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
