"""SCAFFOLD (Karimireddy et al., ICML 2020, option II): its correction changes plain local SGD, and
what it is not defined for is refused in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.harness import TINY, load_all, mean_of, sequential_setup

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


def test_scaffold_differs_from_plain_local_sgd(tmp_path):
    """With c = c_i = 0 a round is FedAvg's with step η_g; SCAFFOLD's second round already
    corrects: the reference without the correction ends elsewhere."""
    models, c_i = reference(SGD)
    cfg, topo, plain, opts, streams = sequential_setup(SGD)
    from fedsim.federation import train_steps

    x = [t.detach().clone() for t in plain[0].state_dict().values()]
    for _ in range(cfg.rounds):
        for i in range(4):
            train_steps(plain[i], opts[i], streams[i], cfg.train.local_steps)
        mean = mean_of([list(m.state_dict().values()) for m in plain])
        x = [xx + cfg.scaffold.server_lr * (m - xx) for xx, m in zip(x, mean)]
        load_all(plain, x)
    moved = max(float((a - b).abs().max()) for a, b in zip(models[0].state_dict().values(), x))
    assert moved > 1e-4


@pytest.mark.parametrize("extra,match", [
    (["train.optimizer=adam"], "set train.optimizer: sgd and train.momentum: 0"),
    (["train.optimizer=sgd"], "set train.optimizer: sgd and train.momentum: 0"),  # momentum 0.9
    (["train.optimizer=sgd", "train.momentum=0", "train.lr_schedule=sqrt"], "train.lr_schedule: constant"),
    (["train.optimizer=sgd", "train.momentum=0", "compression.kind=int8"], "use compression.kind: none"),
    (["train.optimizer=sgd", "train.momentum=0", "privacy.mode=client", "privacy.noise_multiplier=1",
      "privacy.delta=0.1"], "privacy.mode client is not available for algorithm 'scaffold'"),
])
def test_what_scaffold_is_not_defined_for_is_one_line(extra, match):
    from fedsim.errors import ConfigError
    from fedsim.experiment import resolve_config

    with pytest.raises(ConfigError, match=match) as err:
        resolve_config(None, TINY + ["algorithm=scaffold", "compare_with=[]", "downstream.enabled=false", *extra])
    assert "\n" not in str(err.value)
