"""FedEFM's distillation step as the equations say (eq. 2 and 11, in one process): equal weights and
β = 0 are plain SGD on cross-entropy, an identical teacher weighs one and adds no KD gradient, the
EMD weights carry a gradient only when asked, a visiting copy trains on its host's stream, and the
mixing rule changes the result."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fedsim.algorithms.fedefm import distill_step
from fedsim.config import load_config
from fedsim.federation import BatchStream, make_optimizer, silo_seed
from fedsim.models import ModelConfig, build_model
from tests.harness import (
    EFM,
    TINY,
    Released,
    average_states,
    fedefm_distill_reference,
    sequential_setup,
    train_ce,
)


def reference_fedefm(overrides: list[str], scenario: str = "dfl", trace: dict | None = None,
                     travels: bool = False) -> list[torch.nn.Module]:
    """Eq. 1–3 and 11 in one process, written out directly, with the aggregation of
    ``fedefm.aggregate`` / ``fedefm.mix`` (CFL: a complete graph through the server). ``trace``
    receives, for each round k and silo i that distils, (its teachers, ``_distill``'s steps).
    ``travels``: every silo is the released code's model object (AdamW + LambdaLR sqrt,
    :class:`tests.harness.Released`) and a visitor is a deep copy of it, optimiser and all."""
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    if travels:
        assert (cfg.train.optimizer, cfg.train.lr_schedule, cfg.train.weight_decay) == ("adamw", "sqrt", 0.01)
        opts = [Released(m, lr=cfg.train.lr) for m in models]  # opts[i].net is models[i]
    n = topo.num_silos
    s = cfg.fedefm.self_weight
    every_round = cfg.fedefm.aggregate == "round"
    if scenario == "cfl":
        in_nb = {i: [j for j in range(n) if j != i] for i in range(n)}
    else:
        in_nb = {i: sorted(topo.in_neighbours(i)) for i in range(n)}
    out_nb = {j: [i for i in range(n) if j in in_nb[i]] for j in range(n)}

    def restart_from_mean():
        theta = average_states(models, [1.0 / n] * n)
        for m in models:
            m.load_state_dict(theta)

    for k in range(cfg.rounds):
        if k == 0:
            for i in range(n):
                train_ce(models[i], opts[i], streams[i], cfg.train.local_steps)
            if scenario == "cfl" and every_round:
                restart_from_mean()
            continue
        # eq. 1: θ_i visits each in-neighbour j and trains there; host j serves visitors in id order
        experts = {}
        for j in range(n):
            for i in out_nb[j]:  # i with j ∈ N_in(i)
                if travels:  # θ_i with its optimiser and schedule; the expert is the copy's weights
                    twin = copy.deepcopy(opts[i])
                    visitor, optimizer = twin.net, twin
                else:
                    visitor = copy.deepcopy(models[i])
                    optimizer = make_optimizer(visitor, cfg)
                train_ce(visitor, optimizer, streams[j], cfg.fedefm.overseas_steps)
                experts[(j, i)] = visitor
        # eq. 2, 3, 11 at each home silo
        for i in range(n):
            steps = fedefm_distill_reference(models[i], opts[i], streams[i], [experts[(j, i)] for j in in_nb[i]], cfg)
            if trace is not None:
                trace[(k, i)] = (in_nb[i], steps)
        if not every_round:
            continue
        if scenario == "cfl":
            restart_from_mean()
            continue
        if cfg.fedefm.mix == "hosted":  # the visitors silo i hosted: its out-neighbours' models
            others = {i: [experts[(i, v)] for v in out_nb[i]] for i in range(n)}
        elif cfg.fedefm.mix == "experts":  # silo i's own experts, back from its in-neighbours
            others = {i: [experts[(j, i)] for j in in_nb[i]] for i in range(n)}
        else:
            others = None
        if others is not None:
            new = [average_states([models[i], *others[i]], [s] + [(1 - s) / len(others[i])] * len(others[i]))
                   for i in range(n)]
        else:  # Metropolis–Hastings with the in-neighbours' distilled models
            deg = {i: len(in_nb[i]) for i in range(n)}
            new = []
            for i in range(n):
                w = {j: 1.0 / (1 + max(deg[i], deg[j])) for j in in_nb[i]}
                new.append(average_states([models[i], *[models[j] for j in in_nb[i]]],
                                    [1 - sum(w.values()), *w.values()]))
        for m, state in zip(models, new):
            m.load_state_dict(state)
    return models


def test_the_mixing_rule_changes_the_result(tmp_path):
    """The references above are not blind to the rule: hosted and experts differ."""
    a = reference_fedefm(EFM + ["fedefm.mix=hosted"])
    b = reference_fedefm(EFM + ["fedefm.mix=experts"])
    assert any(not torch.allclose(x, y) for x, y in zip(a[0].state_dict().values(), b[0].state_dict().values()))


def _cfg(extra=()):
    return load_config(None, TINY + EFM + list(extra))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(8, 1, 16, 16, generator=g), torch.randint(0, 6, (8,), generator=g)


def _models(n=3):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(build_model(ModelConfig(width=4), 6))
    return out


def test_equal_weights_and_beta_zero_is_plain_sgd_on_cross_entropy():
    cfg = _cfg(["fedefm.beta=0", "train.optimizer=sgd", "train.momentum=0", "train.lr=0.1"])
    student, t1, t2 = _models()
    plain = copy.deepcopy(student)
    x, y = _batch()
    distill_step(student, make_optimizer(student, cfg), [t1, t2], x, y, cfg.fedefm, cfg.emd, weights=torch.tensor([0.5, 0.5]))
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    F.cross_entropy(plain(x), y).backward()
    opt.step()
    for a, b in zip(student.state_dict().values(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


def test_identical_teacher_gives_weight_one_and_no_kd_gradient():
    from fedsim.algorithms.fedefm import distillation_loss, emd_weights
    from fedsim.models import logits_and_features

    cfg = _cfg(["emd.normalize=false"])
    student = _models(1)[0]
    teacher = copy.deepcopy(student)
    x, y = _batch(1)
    z_s, f_s = logits_and_features(student, x)
    with torch.no_grad():
        z_t, f_t = logits_and_features(teacher, x)
    w = emd_weights(f_s, [f_t], cfg.emd)
    assert w.item() == pytest.approx(1.0, abs=1e-6)
    kd_only = distillation_loss(z_s, z_t, y, temperature=3.0, beta=1.0)
    grads = torch.autograd.grad(kd_only, list(student.parameters()), allow_unused=True)
    assert kd_only.item() == pytest.approx(0.0, abs=1e-7)
    assert max(g.abs().max().item() for g in grads if g is not None) < 1e-6


def test_emd_weight_gradient_flows_only_when_asked():
    from fedsim.algorithms.fedefm import emd_weights
    from fedsim.models import logits_and_features

    student, teacher = _models(2)
    x, _ = _batch(2)
    _, f_s = logits_and_features(student, x)
    f_t = teacher.features(x).detach()
    w_grad = emd_weights(f_s, [f_t], _cfg(["emd.normalize=false"]).emd)
    assert w_grad.requires_grad
    w_detached = emd_weights(f_s, [f_t], _cfg(["emd.normalize=false", "emd.grad=false"]).emd)
    assert not w_detached.requires_grad
    torch.testing.assert_close(w_grad.detach(), w_detached)
    assert 0 < w_grad.item() < 1


def test_visiting_copy_trains_on_the_hosts_stream():
    """Eq. 1 draws ξ_j from the host: the host's stream advances, the visitor's does not."""
    cfg = _cfg()
    from fedsim.algorithms.fedefm import overseas_training
    from fedsim.data import load_federated

    data = load_federated(cfg.data, 2, 0)
    host = BatchStream(data.train[1], 8, silo_seed(0, 1), torch.device("cpu"))
    before = host.pos
    overseas_training(_models(1)[0], host, 3, cfg)
    assert before == 0 and host.pos == 3 * 8  # three batches of 8 from a fresh 32-sample epoch
