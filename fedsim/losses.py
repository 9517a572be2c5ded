"""Losses shared by several algorithms."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def softened_kl(student_logits: torch.Tensor, teacher: torch.Tensor, temperature: float, *,
                reduction: Literal["batchmean", "none", "mean"] = "batchmean",
                teacher_probs: bool = False) -> torch.Tensor:
    """T² · KL(softmax(z_T / T) ‖ softmax(z_S / T)) over the classes (dim 1): the temperature-scaled
    distillation term of FedEFM, FedDF, FedMD, MDH-FL and FM-instructed initialization.

    ``teacher``: the teacher's logits z_T, or, with ``teacher_probs``, the softened teacher
    distribution itself (MDH-FL's consensus). ``reduction``: "batchmean" — summed over everything,
    divided by the batch size (torch's ``kl_div`` batchmean); "none" — one value per sample (per
    pixel for (B, C, H, W) logits), summed over the classes; "mean" — the mean of those values
    (per-pixel distillation)."""
    T = temperature
    log_student = F.log_softmax(student_logits / T, dim=1)
    target = teacher if teacher_probs else F.log_softmax(teacher / T, dim=1)
    if reduction == "batchmean":
        return T * T * F.kl_div(log_student, target, reduction="batchmean", log_target=not teacher_probs)
    per_position = F.kl_div(log_student, target, reduction="none", log_target=not teacher_probs).sum(1)
    # T² last for "mean": the order of the per-pixel loss fminit has always computed (bit-identical)
    return T * T * per_position if reduction == "none" else T * T * per_position.mean()


def symmetric_cross_entropy(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.1, beta: float = 1.0,
                            log_zero: float = -4.0) -> torch.Tensor:
    """Symmetric cross-entropy (Wang et al., ICCV 2019), robust to label noise:
    α·CE(p, y) + β·RCE with RCE = −Σ_k p_k log q_k, q the one-hot label and log 0 := A
    (``log_zero``), i.e. RCE = −A (1 − p_y). Batch mean. The paper's CIFAR-10 setting:
    α = 0.1, β = 1, A = −4."""
    ce = F.cross_entropy(logits, target)
    p_y = F.softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    return alpha * ce + beta * (-log_zero * (1.0 - p_y)).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean soft Dice over the foreground classes (batch-level, smoothing 1): logits
    (B, C, H, W), target (B, H, W) class ids with 0 = background."""
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy + soft Dice loss: the supervised segmentation loss of the
    downstream U-Net and of silos in ``task: segmentation`` runs."""
    return F.cross_entropy(logits, target) + soft_dice_loss(logits, target)


def pixel_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(σ(z_T / T) ‖ σ(z_S / T)) of the per-pixel class distributions (softmax over dim 1),
    summed over classes and averaged over every pixel of the batch."""
    return softened_kl(student_logits, teacher_logits, temperature, reduction="mean")


def fm_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                         alpha: float = 0.6, temperature: float = 1.0) -> torch.Tensor:
    """FM-instructed initialization (Li and Yang, "Where to begin?", eq. 5): L = α · L_KL(teacher ‖ student) per pixel
    + (1 − α) · L_dice(y, σ(student)); the teacher's logits carry no gradient."""
    return (alpha * pixel_kl(student_logits, teacher_logits.detach(), temperature)
            + (1.0 - alpha) * soft_dice_loss(student_logits, target))
