"""SCAFFOLD (Karimireddy et al., ICML 2020, option II) equals a sequential re-computation of its
Algorithm 1 on 1 and 2 gloo ranks — with a silo that sits a round out keeping its c_i, and under
DP-SGD (the correction added to the private gradient) — counts the variates' bytes, and refuses
what it is not defined for in one line.

The checks that need no process: tests/unit/algorithms/test_scaffold.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.harness import assert_models, load_all, mean_of, models_of, sequential_setup
from tests.integration.harness import run_states

SGD = ["algorithm=scaffold", "train.optimizer=sgd", "train.momentum=0", "train.lr=0.01", "scaffold.server_lr=0.8",
       "rounds=3"]


def reference(overrides: list[str], absent: dict[int, set[int]] | None = None):
    """Algorithm 1 with option II, sequentially: (final models, each silo's c_i). ``absent``:
    round → silos sitting it out (they keep model and c_i, and rejoin from x)."""
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    n, K, lr, eta_g = topo.num_silos, cfg.train.local_steps, cfg.train.lr, cfg.scaffold.server_lr
    x = [t.detach().clone() for t in models[0].state_dict().values()]  # the cnn's state: parameters only
    c = [torch.zeros_like(t) for t in x]
    c_i = {i: [torch.zeros_like(t) for t in x] for i in range(n)}
    absent = absent or {}
    for k in range(cfg.rounds):
        S = [i for i in range(n) if i not in absent.get(k, set())]
        for i in S:
            if i in absent.get(k - 1, set()):  # back: from the server's x
                load_all([models[i]], x)
        delta_c = []
        for i in S:
            model, params = models[i], list(models[i].parameters())
            for _ in range(K):  # y_i ← y_i − η_l (g_i(y_i) − c_i + c)
                xb, yb = streams[i].next()
                loss = F.cross_entropy(model(xb), yb)
                opts[i].zero_grad()
                loss.backward()
                for p, cc, ci in zip(params, c, c_i[i]):
                    p.grad.add_(cc - ci)
                opts[i].step()
            y = [t.detach() for t in model.state_dict().values()]
            new = [ci - cc + (xx - yy) / (K * lr) for ci, cc, xx, yy in zip(c_i[i], c, x, y)]  # option II
            delta_c.append([a - b for a, b in zip(new, c_i[i])])
            c_i[i] = new
        mean = mean_of([list(models[i].state_dict().values()) for i in S])
        x = [xx + eta_g * (m - xx) for xx, m in zip(x, mean)]  # x + η_g · mean Δy_i
        c = [cc + (torch.stack([d[t].double() for d in delta_c]).sum(0) / n).float()  # c + |S|/N · mean Δc_i
             for t, cc in enumerate(c)]
        load_all([models[i] for i in S], x)
    return models, c_i


@pytest.mark.parametrize("nproc", [1, 2])
def test_scaffold_is_algorithm_1_option_2_and_an_absent_silo_keeps_its_variate(tmp_path, nproc):
    overrides = SGD + ["faults.dropout=[{silo: 1, start: 1, end: 1}]"]
    states, records = run_states(tmp_path, overrides, nproc)
    models, c_i = reference(overrides, absent={1: {1}})
    assert_models(models_of(states), models)
    for i in range(4):
        for a, b in zip(states[i]["algorithm"]["c_i"], c_i[i], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert float(sum((t ** 2).sum() for t in c_i[1])) > 0  # silo 1's variate is not a fresh zero
    # the model and its variate go up, x and c come down: twice the cnn (whose state is parameters)
    model = sum(t.numel() * t.element_size() for t in models_of(states)[0])
    for r in records:
        if r["participated"]:
            assert r["bytes_by_dst"] == {"server": 2 * model} and r["bytes_from_server"] == 2 * model, r
        else:
            assert r["bytes_sent"] == 0 and "bytes_from_server" not in r


def test_scaffold_under_dp_sgd_corrects_the_private_gradient(tmp_path):
    """DP-SGD with σ = 0 and a bound no gradient reaches is plain SGD: the run equals the
    non-private reference only if the correction reaches the gradient Opacus hands the optimiser
    (Opacus sums per-sample gradients in another order: ~1e-8, which this small net's steps grow
    to ~1e-6 in two rounds; the correction itself moves the weights by ~1e-3)."""
    plain = SGD + ["rounds=2"]
    overrides = plain + ["privacy.mode=sample", "privacy.noise_multiplier=0", "privacy.max_grad_norm=1e6",
                         "privacy.sampling=shuffle", "privacy.delta=0.01"]
    states, records = run_states(tmp_path, overrides, 2)
    models, _ = reference(plain)
    assert_models(models_of(states), models, atol=1e-5)
    assert all(r["dp_steps"] == 2 * (r["round"] + 1) for r in records)
