"""FedNova (Wang et al., NeurIPS 2020) equals a sequential re-computation of normalised averaging
when stragglers stopped at the deadline take fewer local steps (``faults.past_deadline:
partial``) — plain SGD and SGD with momentum (the paper's a_i), weighted silos, 1 and 2 gloo
ranks, client-level DP and int8 coding — while FedAvg under the same stragglers averages the
unnormalised updates.

The checks that need no process: tests/unit/algorithms/test_fednova.py."""

from __future__ import annotations

import math

import pytest
import torch

from fedsim.federation import train_steps
from tests.harness import assert_models, int8, load_all, mean_of, models_of, sequential_setup
from tests.integration.harness import run_states

# τ = 4; silo 0 is 2× slower and silo 2 4× slower than the deadline allows: they finish 2 and 1 steps
STRAGGLERS = ["train.local_steps=4", "faults.stragglers=[{silo: 0, factor: 2}, {silo: 2, factor: 4}]",
              "faults.deadline=1", "faults.past_deadline=partial"]
STEPS = [2, 4, 1, 4]
SGD = ["train.optimizer=sgd", "train.lr=0.01"]


def a_norm(steps: int, rho: float) -> float:
    """‖a_i‖₁ from its definition: a step j of τ (from 0) carries Σ_{s<τ−j} ρ^s of its gradient."""
    return float(sum(sum(rho ** s for s in range(steps - j)) for j in range(steps)))


def reference(overrides: list[str], normalise: bool = True, clip: float | None = None, sigma: float = 0.0,
              code: bool = False):
    """FedNova (or, ``normalise=False``, FedAvg) rounds with silo i taking STEPS[i] local steps,
    a fresh momentum buffer each round for FedNova; updates clipped and noised (DP-FedAvg) or
    int8-coded with error feedback on the way up and down, as the server path does."""
    from fedsim.data import derive_seed
    from fedsim.privacy.client import NOISE_STREAM

    cfg, topo, models, opts, streams = sequential_setup(overrides)
    rho, n = cfg.train.momentum, topo.num_silos
    status = cfg.accumulation_status or [1] * n
    p = [s / sum(status) for s in status]  # p_i (one sample count per silo here)
    x = [t.detach().clone() for t in models[0].state_dict().values()]
    res_up = {i: [torch.zeros_like(t) for t in x] for i in range(n)}
    res_down = [torch.zeros_like(t) for t in x]
    for k in range(cfg.rounds):
        for i in range(n):
            if normalise:  # FedNova's local solver: momentum from zero each round
                opts[i] = torch.optim.SGD(models[i].parameters(), lr=cfg.train.lr, momentum=rho)
            train_steps(models[i], opts[i], streams[i], STEPS[i])
        a = [a_norm(s, rho) if normalise else 1.0 for s in STEPS]
        tau_eff = sum(pi * ai for pi, ai in zip(p, a)) if normalise else 1.0
        # x + τ_eff Σ p_i Δ_i / ‖a_i‖₁, as the mean of the silos' x + (τ_eff / ‖a_i‖₁) Δ_i
        sent = [[b + (tau_eff / a[i]) * (t - b) if normalise else t.detach().clone()
                 for t, b in zip(models[i].state_dict().values(), x)] for i in range(n)]
        if clip is None and not code:
            x = mean_of([sent[i] for i in range(n) if status[i]])
            load_all(models, x)
            continue
        updates = []
        for i in range(n):
            u = [s - b for s, b in zip(sent[i], x)]
            if code:
                u_e = [a_ + e for a_, e in zip(u, res_up[i])]
                u = [int8(t) for t in u_e]
                res_up[i] = [a_ - b for a_, b in zip(u_e, u)]
            if clip is not None:
                norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in u))
                u = [t * (clip / (norm * (1 + 1e-6))) if norm > clip else t for t in u]
            updates.append(u)
        mean = mean_of([updates[i] for i in range(n) if status[i]])
        if sigma > 0:
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, NOISE_STREAM, k))
            mean = [m + torch.normal(0.0, sigma * clip / sum(status), size=m.shape, generator=g,
                                     dtype=torch.float64).float() for m in mean]
        new = [b + m for b, m in zip(x, mean)]
        if code:
            sent_down = [a_ - b + e for a_, b, e in zip(new, x, res_down)]
            change = [int8(t) for t in sent_down]
            res_down = [a_ - b for a_, b in zip(sent_down, change)]
            new = [b + c for b, c in zip(x, change)]
        x = new
        load_all(models, x)
    return models


def test_fednova_normalises_the_stragglers_updates_with_momentum(tmp_path):
    overrides = ["algorithm=fednova", *SGD, "train.momentum=0.9", *STRAGGLERS]
    states, records = run_states(tmp_path, overrides, 2)
    assert_models(models_of(states), reference(overrides))
    for r in records:  # the deadline cut silos 0 and 2; every silo took part
        assert r["participated"] and r.get("local_steps") == {0: 2, 2: 1}.get(r["silo"])
        assert r["grad_steps"] == STEPS[r["silo"]]
        assert r["fednova_a"] == pytest.approx(a_norm(STEPS[r["silo"]], 0.9), rel=1e-12)
        assert r["fednova_tau_eff"] == pytest.approx(sum(a_norm(s, 0.9) for s in STEPS) / 4, rel=1e-12)


def test_fednova_with_plain_sgd_and_a_silo_left_out_of_the_average(tmp_path):
    """ϑ = [1, 1, 0, 1]: p_i = 1/3 over silos 0, 1, 3 and τ_eff = (2 + 4 + 4) / 3."""
    overrides = ["algorithm=fednova", *SGD, "train.momentum=0", *STRAGGLERS, "accumulation_status=[1,1,0,1]"]
    states, records = run_states(tmp_path, overrides, 1)
    assert_models(models_of(states), reference(overrides))
    assert all(r["fednova_tau_eff"] == pytest.approx(10 / 3, rel=1e-12) for r in records)


def test_fedavg_under_the_same_stragglers_averages_unnormalised_updates(tmp_path):
    overrides = ["algorithm=fedavg", *SGD, "train.momentum=0.9", *STRAGGLERS]
    states, records = run_states(tmp_path, overrides, 2)
    fedavg = reference(overrides, normalise=False)
    assert_models(models_of(states), fedavg)
    assert sorted((r["silo"], r["grad_steps"]) for r in records if r["round"] == 0) == list(enumerate(STEPS))
    nova = reference(["algorithm=fednova", *SGD, "train.momentum=0.9", *STRAGGLERS])
    assert max(float((a - b).abs().max()) for a, b in zip(fedavg[0].state_dict().values(),
                                                           nova[0].state_dict().values())) > 1e-4


def test_fednova_with_client_dp_clips_the_rescaled_update(tmp_path):
    overrides = ["algorithm=fednova", *SGD, "train.momentum=0", *STRAGGLERS, "privacy.mode=client",
                 "privacy.noise_multiplier=0.5", "privacy.max_grad_norm=0.01", "privacy.delta=0.1"]
    states, records = run_states(tmp_path, overrides, 2)
    assert all(r["update_norm"] > 0.01 >= r["clipped_update_norm"] for r in records)
    assert_models(models_of(states), reference(overrides, clip=0.01, sigma=0.5))


def test_fednova_with_int8_codes_the_rescaled_update(tmp_path):
    overrides = ["algorithm=fednova", *SGD, "train.momentum=0.9", *STRAGGLERS, "compression.kind=int8"]
    states, _ = run_states(tmp_path, overrides, 2)
    assert_models(models_of(states), reference(overrides, code=True), atol=1e-5)
