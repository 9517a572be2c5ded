"""Robust aggregation on real gloo ranks equals a sequential re-computation: FedAvg's server and
gossip's mix under ``aggregation: median`` and ``krum`` (4 silos on 1 and 2 ranks, one silo sending
noised weights), every silo's final model and Θ. The references apply numpy's median and Krum as
written from its definition (tests/unit/test_aggregation.py) to the stacked models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.faults import noisy_message
from fedsim.federation import train_steps
from fedsim.transport import SERVER
from tests.harness import assign, flat, krum_by_definition, sequential_setup
from tests.integration.harness import run_distributed

NOISY, LEVEL = 2, 0.5  # silo 2 sends its weights with N(0, 0.5²) noise in every round


def rule(name: str, rows: torch.Tensor) -> torch.Tensor:
    """The rule over equally weighted rows (ring-4's Metropolis–Hastings weights are all 1/3)."""
    x = rows.numpy()
    out = np.median(x, axis=0) if name == "median" else krum_by_definition(x, f=0)
    return torch.from_numpy(out)


def sent(model, cfg, k: int, src: int, dst: int) -> torch.Tensor:
    """The flat state silo ``src`` sends ``dst`` in round ``k`` (its one send of the round)."""
    tensors = list(model.state_dict().values())
    if src == NOISY:
        tensors = noisy_message(tensors, LEVEL, cfg.seed, k, 0, src, dst)
    return torch.cat([t.detach().double().reshape(-1) for t in tensors if t.is_floating_point()])


@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("algorithm, aggregation", [("fedavg", "median"), ("fedavg", "krum"),
                                                     ("gossip", "median"), ("gossip", "krum")])
def test_a_robust_rule_matches_its_sequential_recomputation(tmp_path, algorithm, aggregation, nproc):
    overrides = [f"algorithm={algorithm}", "topology=ring-4", f"aggregation={aggregation}", "krum_f=0",
                 f"faults.corrupt=[{{silo: {NOISY}, kind: weight_noise, level: {LEVEL}}}]", f"name={algorithm}"]
    got = run_distributed(tmp_path, overrides, nproc=nproc)
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    n = topo.num_silos
    for k in range(cfg.rounds):
        for i in range(n):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        if algorithm == "fedavg":
            theta = rule(aggregation, torch.stack([sent(models[i], cfg, k, i, SERVER) for i in range(n)]))
            new = [theta] * n
        else:  # each silo: itself and what its in-neighbours sent it, in silo order
            new = []
            for i in range(n):
                rows = {i: flat(models[i]), **{j: sent(models[j], cfg, k, j, i) for j in topo.in_neighbours(i)}}
                new.append(rule(aggregation, torch.stack([rows[j] for j in sorted(rows)])))
        for i in range(n):
            assign(models[i], new[i])
    for i in range(n):
        for a, b in zip(got[i], models[i].state_dict().values()):
            if a.is_floating_point():
                torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # Θ: the rule over the silos' own models (no noise: Θ reads the models, not messages)
    theta = torch.load(tmp_path / algorithm / "foundation.pt")
    expected = rule(aggregation, torch.stack([flat(m) for m in models]))
    got_theta = torch.cat([t.double().reshape(-1) for t in theta.values() if t.is_floating_point()])
    torch.testing.assert_close(got_theta, expected, atol=1e-6, rtol=0)
