"""FedOpt (Reddi et al., ICLR 2021) equals a sequential re-computation of its Algorithm 2 —
FedAdam, FedYogi, FedAdagrad and server SGD (η = 1: FedAvg) — on 1 and 2 gloo ranks, with
client-level DP and with int8 coding on the server path; its server state resumes bit-identically.
"""

from __future__ import annotations

import math

import pytest
import torch

from fedsim.federation import train_steps
from tests.harness import (
    assert_models,
    assert_models_up_to_rounding_flips,
    assert_same_state,
    fedavg_rounds_reference,
    int8,
    load_all,
    mean_of,
    models_of,
    sequential_setup,
)
from tests.integration.harness import run_states


class Algorithm2:
    """The server of the paper's Algorithm 2 (no bias correction; m_{−1} = 0, v_{−1} = τ²)."""

    def __init__(self, rule: str, lr: float, beta1: float, beta2: float, tau: float, x: list[torch.Tensor]):
        self.rule, self.lr, self.b1, self.b2, self.tau = rule, lr, beta1, beta2, tau
        self.m = [torch.zeros_like(t) for t in x]
        self.v = [torch.full_like(t, tau * tau) for t in x]

    def step(self, x: list[torch.Tensor], delta: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.rule == "sgd":
            return [p + self.lr * d for p, d in zip(x, delta)]
        out = []
        for n, (p, d) in enumerate(zip(x, delta)):
            self.m[n] = self.b1 * self.m[n] + (1 - self.b1) * d
            if self.rule == "adagrad":
                self.v[n] = self.v[n] + d ** 2
            elif self.rule == "yogi":
                self.v[n] = self.v[n] - (1 - self.b2) * d ** 2 * torch.sign(self.v[n] - d ** 2)
            else:
                self.v[n] = self.b2 * self.v[n] + (1 - self.b2) * d ** 2
            out.append(p + self.lr * self.m[n] / (torch.sqrt(self.v[n]) + self.tau))
        return out


SERVER = ["fedopt.server_lr=0.03", "fedopt.beta1=0.8", "fedopt.beta2=0.95", "fedopt.tau=0.002"]


def reference(overrides: list[str], rule: str, clip: float | None = None, sigma: float = 0.0, code: bool = False,
              steps: list[set[float]] | None = None):
    """FedOpt sequentially: local steps, Δ = mean of the updates (clipped and noised as DP-FedAvg
    with ``clip``; int8-coded with error feedback up and down with ``code``, each tensor's down
    code step s = max|x| / 127 of every round added to ``steps``), the server's step."""
    from fedsim.data import derive_seed
    from fedsim.privacy.client import NOISE_STREAM

    cfg, topo, models, opts, streams = sequential_setup(overrides)
    n = topo.num_silos
    x = [t.detach().clone() for t in models[0].state_dict().values()]
    seen = [t.clone() for t in x]  # Θ̂: the model the silos hold (decoded)
    server = Algorithm2(rule, cfg.fedopt.server_lr, cfg.fedopt.beta1, cfg.fedopt.beta2, cfg.fedopt.tau, x)
    res_up = {i: [torch.zeros_like(t) for t in x] for i in range(n)}
    res_down = [torch.zeros_like(t) for t in x]
    for k in range(cfg.rounds):
        updates = []
        for i in range(n):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        if clip is None and not code:  # the plain server: Δ = mean θ_i − x
            delta = [a - b for a, b in zip(mean_of([list(m.state_dict().values()) for m in models]), x)]
            x = server.step(x, delta)
            seen = [t.clone() for t in x]
            load_all(models, seen)
            continue
        for i in range(n):
            u = [t - b for t, b in zip(models[i].state_dict().values(), seen)]
            if code:
                sent = [a + e for a, e in zip(u, res_up[i])]
                u = [int8(t) for t in sent]
                res_up[i] = [a - b for a, b in zip(sent, u)]
            if clip is not None:
                norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in u))
                u = [t * (clip / (norm * (1 + 1e-6))) if norm > clip else t for t in u]
            updates.append(u)
        delta = mean_of(updates)
        if clip is not None and sigma > 0:
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, NOISE_STREAM, k))
            delta = [d + torch.normal(0.0, sigma * clip / n, size=d.shape, generator=g, dtype=torch.float64).float()
                     for d in delta]
        delta = [(s + d) - s for s, d in zip(seen, delta)]  # the server's mean, Θ̂ + Δ, less Θ̂
        x = server.step(x, delta)
        if code:  # down: the change from Θ̂ to x, coded with the server's own residual
            sent = [a - b + e for a, b, e in zip(x, seen, res_down)]
            change = [int8(t) for t in sent]
            if steps is not None:
                steps += [set() for _ in sent[len(steps):]]
                for j, t in enumerate(sent):
                    steps[j].add(float(t.abs().max()) / 127.0)
            res_down = [a - b for a, b in zip(sent, change)]
            seen = [b + c for b, c in zip(seen, change)]
        else:
            seen = [t.clone() for t in x]
        load_all(models, seen)
    return models


@pytest.mark.parametrize("rule,nproc", [("adam", 2), ("yogi", 1), ("adagrad", 2)])
def test_fedopt_is_algorithm_2(tmp_path, rule, nproc):
    overrides = ["algorithm=fedopt", f"fedopt.server_optimizer={rule}", *SERVER, "rounds=3"]
    states, _ = run_states(tmp_path, overrides, nproc)
    assert_models(models_of(states), reference(overrides, rule))
    # not FedAvg: the server's adaptive step moved Θ elsewhere
    fedavg = reference(["algorithm=fedopt", "fedopt.server_optimizer=sgd", "fedopt.server_lr=1", "rounds=3"], "sgd")
    got = torch.cat([t.reshape(-1) for t in models_of(states)[0]])
    assert (got - torch.cat([t.reshape(-1) for t in fedavg[0].state_dict().values()])).abs().max() > 1e-3


def test_server_sgd_with_step_one_is_fedavg(tmp_path):

    overrides = ["algorithm=fedopt", "fedopt.server_optimizer=sgd", "fedopt.server_lr=1"]
    states, _ = run_states(tmp_path, overrides, 1)
    plain = fedavg_rounds_reference(overrides, lambda i, k, m, x, y: torch.nn.functional.cross_entropy(m(x), y))
    assert_models(models_of(states), plain)


def test_fedopt_with_client_dp_clips_noises_then_steps(tmp_path):
    overrides = ["algorithm=fedopt", *SERVER, "privacy.mode=client", "privacy.noise_multiplier=0.5",
                 "privacy.max_grad_norm=0.02", "privacy.delta=0.1"]
    states, records = run_states(tmp_path, overrides, 2)
    assert all(r["update_norm"] > 0.02 for r in records)  # the clip was active
    assert_models(models_of(states), reference(overrides, "adam", clip=0.02, sigma=0.5))


def test_fedopt_with_int8_codes_updates_up_and_the_change_down(tmp_path):
    overrides = ["algorithm=fedopt", *SERVER, "compression.kind=int8"]
    states, records = run_states(tmp_path, overrides, 2)
    steps: list[set[float]] = []
    expected = reference(overrides, "adam", code=True, steps=steps)
    assert_models_up_to_rounding_flips(models_of(states), expected, steps, atol=1e-5)
    coded = sum(t.numel() + 4 for t in models_of(states)[0])  # a byte per value, a float32 scale per tensor
    assert all(r["bytes_by_dst"] == {"server": coded} and r["bytes_from_server"] == coded for r in records)


@pytest.mark.parametrize("algorithm", ["fedopt", "scaffold"])
def test_the_server_state_resumes_bit_identically(tmp_path, algorithm):
    """Two rounds straight (2 ranks) equal one round, then a resume for the second (1 rank), in
    every tensor saved: the models, the optimisers, the server's x, m and v (FedOpt, int8-coded:
    Θ̂ ≠ x) or x, c and each silo's c_i (SCAFFOLD; 3 of the 4 silos drawn each round, so one sits
    the resumed round out with the c_i it saved)."""

    extra = {"fedopt": [*SERVER, "compression.kind=int8"],
             "scaffold": ["train.optimizer=sgd", "train.momentum=0", "train.lr=0.05",
                          "faults.participants=3"]}[algorithm]
    job = [f"algorithm={algorithm}", *extra]
    straight, records = run_states(tmp_path, job + ["rounds=2"], 2, "a")
    run_states(tmp_path, job + ["rounds=1"], 2, "b")
    resumed, _ = run_states(tmp_path, job + ["rounds=2"], 1, "b", resume=True)
    for i in straight:
        assert_same_state(straight[i], resumed[i], f"silo {i}")
    assert resumed[0]["algorithm"]["server"]["x"]
    if algorithm == "scaffold":  # someone sat a round out after taking part: its c_i is not zero
        assert any(r["absent"] for r in records) and all(
            any(float(t.abs().max()) > 0 for t in resumed[i]["algorithm"]["c_i"]) for i in resumed)
