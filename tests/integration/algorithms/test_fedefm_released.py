"""The FedEFM authors' released rule: a distributed run equals a hand-written sequential
version of ``Peer2PeerNetwork.mix`` (aioz-ai/FedEFM ``communication.py``)."""

from __future__ import annotations

import copy

import pytest
import torch

from fedsim.federation import make_optimizer
from tests.harness import Released, sequential_setup, train_ce
from tests.integration.harness import run_distributed

REL = ["algorithm=fedefm_released", "fedefm_released.overseas_steps=2"]


def reference_released(overrides: list[str], travels: bool = False) -> list[torch.nn.Module]:
    """``travels``: every silo is the released code's model object (AdamW + LambdaLR sqrt) and the
    copy a host trains is ``copy.deepcopy`` of it, optimiser and schedule included, dropped after
    the mix (which loads only weights into the host's own model object)."""
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    n, s = topo.num_silos, cfg.fedefm_released.self_weight
    if travels:
        assert (cfg.train.optimizer, cfg.train.lr_schedule, cfg.train.weight_decay) == ("adamw", "sqrt", 0.01)
        opts = [Released(m, lr=cfg.train.lr) for m in models]  # opts[i].net is models[i]

    for _ in range(cfg.rounds):
        for i in range(n):  # "LOCAL TRAINING"
            train_ce(models[i], opts[i], streams[i], cfg.train.local_steps)
        copies = {}
        for i in range(n):  # "TRANSMIT MODEL": i trains a copy of each neighbour on its own data
            for j in sorted(topo.in_neighbours(i)):
                if travels:  # "dummy_model = copy.deepcopy(self.workers_models[neighbor])"
                    twin = copy.deepcopy(opts[j])
                    c, optimizer = twin.net, twin
                else:
                    c = copy.deepcopy(models[j])
                    optimizer = make_optimizer(c, cfg)
                train_ce(c, optimizer, streams[i], cfg.fedefm_released.overseas_steps)
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


TRAVELS = ["train.optimizer=adamw", "train.lr_schedule=sqrt", "train.weight_decay=0.01",
           "fedefm_released.expert_optimizer=travels", "rounds=3"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_travelling_optimiser_equals_deep_copies_of_model_and_optimiser(tmp_path, nproc):
    """expert_optimizer travels: the copy i trains of θ_j carries j's AdamW moments, step count
    and sqrt-schedule position, as the released code's deep copy does, and is dropped after the
    mix; every silo's own optimiser goes on untouched by its neighbours' copies."""
    overrides = REL + TRAVELS + ["topology=ring-4", "name=t"]
    got = run_distributed(tmp_path, overrides, nproc=nproc)
    want = reference_released(overrides, travels=True)
    for i, model in enumerate(want):
        for a, b in zip(got[i], model.state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    fresh = reference_released(REL + TRAVELS[:3] + ["rounds=3", "topology=ring-4"])  # the reference is not blind
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(want[0].state_dict().values(), fresh[0].state_dict().values()))
