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
    reference_fedefm,
)


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
