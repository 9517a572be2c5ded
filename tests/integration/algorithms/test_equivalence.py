"""The key property: a distributed run equals a single-process sequential re-computation.

Each run spawns real gloo ranks (4 silos on 2 ranks); the reference below recomputes the same
algorithm in one process with an explicit mixing matrix / mean, from the same seeds.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from fedsim.federation import train_steps
from tests.harness import assert_same_models, assign, fedavg_rounds_reference, flat, sequential_setup
from tests.integration.harness import run_distributed


def test_gossip_matches_sequential_metropolis_hastings(tmp_path):
    overrides = ["algorithm=gossip", "topology=ring-4", "name=g"]
    got = run_distributed(tmp_path, overrides)
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    n = topo.num_silos
    A = np.zeros((n, n))
    for j, i in topo.arcs:
        A[i, j] = 1
    deg = A.sum(1)
    W = np.where(A > 0, 1.0 / (1 + np.maximum.outer(deg, deg)), 0.0)
    W[np.diag_indices(n)] = 1 - W.sum(1)
    assert np.allclose(W.sum(0), 1) and np.allclose(W, W.T)  # doubly stochastic on an undirected ring
    for _ in range(cfg.rounds):
        for i in range(n):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        theta = torch.stack([flat(m) for m in models])
        mixed = torch.from_numpy(W) @ theta
        for i in range(n):
            assign(models[i], mixed[i])
    for i in range(n):
        expected = [t for t in models[i].state_dict().values()]
        for a, b in zip(got[i], expected):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_fedavg_matches_sequential_mean(tmp_path):
    overrides = ["algorithm=fedavg", "topology=ring-4", "name=f"]
    got = run_distributed(tmp_path, overrides)
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    for _ in range(cfg.rounds):
        for i in range(topo.num_silos):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        mean = torch.stack([flat(m) for m in models]).mean(0)
        for m in models:
            assign(m, mean)
    for i in range(topo.num_silos):
        for a, b in zip(got[i], models[i].state_dict().values()):
            if a.is_floating_point():
                torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_fedprox_matches_sequential_proximal_objective(tmp_path):
    mu = 5.0  # large enough that the proximal term changes the models beyond the tolerance
    overrides = ["algorithm=fedprox", f"fedprox.mu={mu}", "topology=ring-4", "name=p", "train.local_steps=3"]
    got = run_distributed(tmp_path, overrides)
    anchors = {}

    def loss(i, k, model, x, y):
        params = [p.reshape(-1) for p in model.parameters()]
        if anchors.get(i, (None,))[0] != k:  # the global model the silo holds when round k starts
            anchors[i] = (k, torch.cat(params).detach().double().clone())
        w = torch.cat(params).double()
        return torch.nn.functional.cross_entropy(model(x), y) + (mu / 2) * ((w - anchors[i][1]) ** 2).sum().float()

    assert_same_models(got, fedavg_rounds_reference(overrides, loss))
    plain = fedavg_rounds_reference(overrides, lambda i, k, m, x, y: torch.nn.functional.cross_entropy(m(x), y))
    assert (flat(plain[0]) - torch.cat([t.double().reshape(-1) for t in got[0] if t.is_floating_point()])).abs().max() > 1e-4


def test_moon_matches_sequential_contrastive_objective(tmp_path):
    mu, tau = 2.0, 0.5
    overrides = ["algorithm=moon", f"moon.mu={mu}", f"moon.temperature={tau}", "topology=ring-4", "name=m",
                 "train.local_steps=3", "rounds=3"]
    got = run_distributed(tmp_path, overrides)
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    previous = {}  # silo -> its model after last round's local training (round 0: the global model)

    def z(model, x):
        return model.features(x).mean(dim=(2, 3))

    def cos(p, q):
        return (p * q).sum(1) / (p.norm(dim=1) * q.norm(dim=1))

    for _ in range(cfg.rounds):
        for i in range(topo.num_silos):
            glob = copy.deepcopy(models[i])
            prev = previous.get(i, glob)

            def loss(m, x, y, glob=glob, prev=prev):
                zi = z(m, x)
                pos = torch.exp(cos(zi, z(glob, x).detach()) / tau)
                neg = torch.exp(cos(zi, z(prev, x).detach()) / tau)
                return torch.nn.functional.cross_entropy(m(x), y) + mu * (-torch.log(pos / (pos + neg))).mean()

            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps, loss)
            previous[i] = copy.deepcopy(models[i])
        mean = torch.stack([flat(m) for m in models]).mean(0)
        for m in models:
            assign(m, mean)
    assert_same_models(got, models)
