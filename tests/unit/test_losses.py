"""The segmentation losses against the hand-written formulas fedsim used before MONAI computed
them (kept here as the independent reference: past runs trained on them)."""

import pytest
import torch
import torch.nn.functional as F

from fedsim.losses import fm_distillation_loss, pixel_kl, segmentation_loss, soft_dice_loss


def ref_soft_dice(logits, target):
    """1 − mean over the foreground classes of (2 Σ p·q + 1) / (Σ p + Σ q + 1), sums over the
    batch and the pixels (batch-level soft Dice, smoothing 1)."""
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()


def _inputs(b=3, c=3, h=10, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, c, h, w, generator=g) * 3).requires_grad_()
    target = torch.randint(0, c, (b, h, w), generator=g)
    return logits, target


def _value_and_grad(fn, logits, *args):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, *args)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("shape", [(3, 3, 10, 8), (2, 5, 7, 7), (1, 2, 4, 4)])
def test_dice_losses_equal_the_handwritten_formulas(shape):
    b, c, h, w = shape
    logits, target = _inputs(b, c, h, w, seed=c)
    target[0] = 0  # a class absent from the whole batch still counts (its term is 1/(Σp + 1))
    for fn, ref in ((soft_dice_loss, ref_soft_dice),
                    (segmentation_loss, lambda z, y: F.cross_entropy(z, y) + ref_soft_dice(z, y))):
        got, got_grad = _value_and_grad(fn, logits, target)
        want, want_grad = _value_and_grad(ref, logits, target)
        assert got.item() == pytest.approx(want.item(), abs=1e-6)
        assert torch.allclose(got_grad, want_grad, atol=1e-7)


def test_fm_distillation_loss_equals_the_handwritten_formula():
    student, target = _inputs(seed=3)
    teacher = torch.randn_like(student)
    got, got_grad = _value_and_grad(lambda z, y: fm_distillation_loss(z, teacher, y, alpha=0.6, temperature=2.0),
                                    student, target)
    want, want_grad = _value_and_grad(
        lambda z, y: 0.6 * pixel_kl(z, teacher, 2.0) + 0.4 * ref_soft_dice(z, y), student, target)
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    assert torch.allclose(got_grad, want_grad, atol=1e-7)
