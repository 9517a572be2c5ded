"""Client-level DP (DP-FedAvg): every silo's update is clipped to the bound in every round, the
run equals a sequential re-computation of Θ ← Θ + mean clip(θ_i − Θ), the server's noise has the
calibrated scale σ S / m, and ε is Opacus' accountant for one Gaussian mechanism per round."""

from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants import RDPAccountant

from tests.harness import sequential_setup
from tests.integration.harness import run_with_plan

CLIENT = ["algorithm=fedavg", "topology=ring-4", "privacy.mode=client", "privacy.delta=0.1"]


def test_updates_are_clipped_every_round_and_match_a_sequential_recomputation(tmp_path):
    from fedsim.federation import train_steps

    bound = 0.02
    overrides = CLIENT + ["privacy.noise_multiplier=0", f"privacy.max_grad_norm={bound}", "rounds=3"]
    _, got, records, summary = run_with_plan(tmp_path, overrides, 2, "clip")
    assert len(records) == 4 * 3
    for rec in records:  # every silo, every round
        assert rec["clipped_update_norm"] <= bound * (1 + 1e-9)
        assert rec["update_norm"] > bound  # the bound was active, so the check above means something
        assert math.isinf(rec["epsilon"])  # σ = 0
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    theta = [t.detach().double().clone() for t in models[0].state_dict().values()]
    for _ in range(cfg.rounds):
        clipped = []
        for i in range(4):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
            delta = [t.double() - b for t, b in zip(models[i].state_dict().values(), theta)]
            norm = math.sqrt(sum(float((d ** 2).sum()) for d in delta))
            clipped.append([d * min(1.0, bound / norm) for d in delta])
        theta = [b + sum(c[t] for c in clipped) / 4 for t, b in enumerate(theta)]
        for m in models:
            with torch.no_grad():
                for dst, src in zip(m.state_dict().values(), theta):
                    dst.copy_(src.float())
    for i in range(4):
        for a, b in zip(got[i], models[i].state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert summary["privacy"]["mode"] == "client"


def test_server_noise_has_the_calibrated_scale_and_epsilon_is_opacus(tmp_path):
    """lr = 0: every update is zero, so Θ moves by the server's noise alone, N(0, (σ S / m)²)
    per round with m the participating silos (silo 2 has ϑ = 0 here: m = 3)."""
    from fedsim.models import ModelConfig, build_model

    sigma, bound, rounds = 2.0, 0.5, 2
    overrides = CLIENT + [f"privacy.noise_multiplier={sigma}", f"privacy.max_grad_norm={bound}", "train.lr=0",
                          f"rounds={rounds}", "accumulation_status=[1,1,0,1]", "privacy.delta=0.2"]
    plan, got, records, summary = run_with_plan(tmp_path, overrides, 2, "noise")
    torch.manual_seed(plan.cfg.seed)
    initial = list(build_model(ModelConfig(width=4), 6).state_dict().values())
    moved = torch.cat([(a - b).reshape(-1) for a, b in zip(got[0], initial)]).double()
    assert all(torch.equal(x, y) for i in got for x, y in zip(got[i], got[0]))  # one Θ for all
    expected_std = sigma * bound / 3 * math.sqrt(rounds)  # two independent rounds of noise
    n = moved.numel()
    assert n > 2000
    assert float(moved.std()) == pytest.approx(expected_std, rel=0.05)
    assert abs(float(moved.mean())) < 4 * expected_std / math.sqrt(n)
    acc = RDPAccountant()
    acc.history = [(sigma, 1.0, rounds)]
    eps = acc.get_epsilon(delta=0.2)
    last = {r["silo"]: r["epsilon"] for r in records if r["round"] == rounds - 1}
    assert last == {0: pytest.approx(eps, rel=1e-9), 1: pytest.approx(eps, rel=1e-9), 2: 0.0,
                    3: pytest.approx(eps, rel=1e-9)}
    assert summary["epsilon"] == pytest.approx(eps, rel=1e-9)


def test_noise_is_calibrated_to_the_silos_present_in_each_round(tmp_path):
    """faults: silo 2 drops out of round 1. lr = 0, so Θ moves by the server's noise alone:
    N(0, (σ S / 4)²) in round 0 and N(0, (σ S / 3)²) in round 1 — re-drawn here from the
    documented noise stream — and silo 2's ε composes one round, the others' two."""
    from fedsim.data import derive_seed
    from fedsim.models import ModelConfig, build_model
    from fedsim.privacy.client import NOISE_STREAM

    sigma, bound, rounds = 2.0, 0.5, 2
    overrides = CLIENT + [f"privacy.noise_multiplier={sigma}", f"privacy.max_grad_norm={bound}", "train.lr=0",
                          f"rounds={rounds}", "privacy.delta=0.2", "faults.dropout=[{silo: 2, start: 1, end: 1}]"]
    plan, got, records, summary = run_with_plan(tmp_path, overrides, 2, "faults")
    torch.manual_seed(plan.cfg.seed)
    theta = [t.clone() for t in build_model(ModelConfig(width=4), 6).state_dict().values()]
    for k, m in enumerate((4, 3)):
        g = torch.Generator().manual_seed(derive_seed(plan.cfg.seed, NOISE_STREAM, k))
        theta = [t + torch.normal(0.0, sigma * bound / m, size=t.shape, generator=g,
                                  dtype=torch.float64).to(t.dtype) if t.is_floating_point() else t for t in theta]
    for a, b in zip(got[0], theta):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert [r["participated"] for r in records if r["silo"] == 2] == [True, False]

    def eps(n: int) -> float:
        acc = RDPAccountant()
        acc.history = [(sigma, 1.0, n)]
        return acc.get_epsilon(delta=0.2)

    last = {r["silo"]: r["epsilon"] for r in records if r["round"] == rounds - 1}
    assert last == {0: pytest.approx(eps(2), rel=1e-9), 1: pytest.approx(eps(2), rel=1e-9),
                    2: pytest.approx(eps(1), rel=1e-9), 3: pytest.approx(eps(2), rel=1e-9)}
    assert summary["epsilon"] == pytest.approx(eps(2), rel=1e-9)
