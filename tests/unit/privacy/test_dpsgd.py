"""Sample-level DP (DP-SGD per silo with Opacus): per-sample clipping against hand-computed
per-sample gradients (a linear model, a CNN with in-place ReLU), FedEFM's distillation loss is
per-sample decomposable, and ``privacy.target_epsilon`` sets the noise for the silo that spends most."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from torch import nn

from fedsim.config import load_config
from fedsim.plan import build_plan
from fedsim.privacy.dpsgd import dp_session
from tests.harness import TINY


def _step(model, x, y, loss_fn, clip: float, lr: float = 1.0) -> list[torch.Tensor]:
    """One DP-SGD step (σ = 0) with plain SGD; returns −Δθ / lr, the gradient Opacus applied."""
    before = [p.detach().clone() for p in model.parameters()]
    with dp_session(model, torch.optim.SGD(model.parameters(), lr=lr), noise_multiplier=0.0, max_grad_norm=clip,
                    expected_batch_size=len(x), generator=None, accountant=RDPAccountant(), sample_rate=0.5) as opt:
        loss = loss_fn(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [(b - p.detach()) / lr for b, p in zip(before, model.parameters())]


def test_per_sample_clipping_matches_hand_computed_gradients():
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    x, y = torch.randn(6, 3) * 3, torch.tensor([0, 1, 2, 3, 0, 1])
    W, b = model.weight.detach().clone(), model.bias.detach().clone()
    # cross-entropy of softmax(W x + b): ∂ℓ_n/∂W = (p_n − e_{y_n}) x_nᵀ, ∂ℓ_n/∂b = p_n − e_{y_n}
    r = torch.softmax(x @ W.T + b, dim=1) - F.one_hot(y, 4).float()
    gW, gb = r[:, :, None] * x[:, None, :], r
    norms = (gW.pow(2).sum((1, 2)) + gb.pow(2).sum(1)).sqrt()
    clip = float(norms.sort().values[2:4].mean())  # half the samples clipped, half not
    assert (norms > clip).any() and (norms < clip).any()
    f = (clip / norms).clamp(max=1.0)
    expected_W = (f[:, None, None] * gW).sum(0) / len(x)
    expected_b = (f[:, None] * gb).sum(0) / len(x)
    got_W, got_b = _step(model, x, y, lambda m, x, y: F.cross_entropy(m(x), y), clip)
    torch.testing.assert_close(got_W, expected_W, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_b, expected_b, atol=1e-5, rtol=1e-4)
    assert not model._forward_hooks and not hasattr(model.weight, "grad_sample")  # an ordinary model again


def _cnn():
    from fedsim.models import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(width=4), 6)


def _per_sample_reference(model, x, y, loss_fn, clip: float) -> list[torch.Tensor]:
    """Σ_n clip(∇ℓ(x_n)) / B with each sample alone through autograd."""
    total = [torch.zeros_like(p) for p in model.parameters()]
    for n in range(len(x)):
        g = torch.autograd.grad(loss_fn(model, x[n:n + 1], y[n:n + 1]), list(model.parameters()))
        norm = torch.sqrt(sum((t ** 2).sum() for t in g))
        factor = min(1.0, clip / float(norm))
        total = [a + factor * t for a, t in zip(total, g)]
    return [t / len(x) for t in total]


def test_clipped_per_sample_gradients_of_a_cnn_with_inplace_relu():
    model = _cnn()
    x, y = torch.randn(5, 1, 16, 16), torch.tensor([0, 1, 2, 3, 4])
    loss = lambda m, x, y: F.cross_entropy(m(x), y)  # noqa: E731
    expected = _per_sample_reference(model, x, y, loss, clip=0.3)
    got = _step(model, x, y, loss, clip=0.3)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-3)
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))  # restored


def test_fedefm_distillation_is_per_sample_under_dp():
    """With per-sample EMD weights, Opacus' per-sample gradients of the distillation loss are the
    gradients of each sample's loss alone (clipped); with FedEFM's batch-mean weights they are not
    — why DP-SGD switches to per-sample weights."""
    from fedsim.algorithms.fedefm import distill_step, distillation_loss, emd_weights
    from fedsim.models import logits_and_features

    cfg = load_config(None, TINY + ["emd.grid=2"])
    student, t1, t2 = _cnn(), _cnn(), _cnn()
    with torch.no_grad():
        for t, s in ((t1, 0.3), (t2, 0.6)):
            for p in t.parameters():
                p.add_(s * torch.randn_like(p))
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])

    def single_loss(model, x, y, per_sample=True):
        z_s, u = logits_and_features(model, x)
        outs = [logits_and_features(t, x) for t in (t1, t2)]
        with torch.no_grad():
            outs = [(z.detach(), v.detach()) for z, v in outs]
        w = emd_weights(u, [v for _, v in outs], cfg.emd, per_sample=per_sample)
        losses = torch.stack([distillation_loss(z_s, z, y, temperature=3.0, beta=0.2, per_sample=per_sample)
                              for z, _ in outs])
        return (w * losses).sum(0).mean() if per_sample else (w * losses).sum()

    clip = 1e6
    expected = _per_sample_reference(student, x, y, single_loss, clip)
    for per_sample, should_match in ((True, True), (False, False)):
        model = _cnn()
        before = [p.detach().clone() for p in model.parameters()]
        with dp_session(model, torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=clip,
                        expected_batch_size=4, generator=None, accountant=RDPAccountant(), sample_rate=0.5) as opt:
            distill_step(model, opt, [t1, t2], x, y, cfg.fedefm, cfg.emd, per_sample=per_sample)
        got = [b - p.detach() for b, p in zip(before, model.parameters())]
        close = all(torch.allclose(a, b, atol=2e-5, rtol=1e-3) for a, b in zip(got, expected))
        assert close == should_match, per_sample


EFM = ["algorithm=fedefm", "topology=ring-4", "fedefm.overseas_steps=1", "fedefm.distill_steps=2"]


def test_target_epsilon_sets_the_noise_for_the_silo_that_spends_most():
    cfg = load_config(None, TINY + EFM + ["topology=star-4", "emd.grid=2", "privacy.mode=sample",
                                          "privacy.target_epsilon=2", "privacy.delta=1e-3"])
    plan = build_plan(cfg, Path("/nonexistent"), 1).privacy
    eps = {}
    for i, steps in plan.planned_steps.items():
        acc = RDPAccountant()
        acc.history = [(plan.noise_multiplier, plan.sample_rates[i], steps)]
        eps[i] = acc.get_epsilon(delta=1e-3)
    assert len(set(plan.planned_steps.values())) > 1  # the hub hosts three visitors, the leaves one
    assert max(eps.values()) <= 2.0 and max(eps.values()) >= 2.0 - 0.02
