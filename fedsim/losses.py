"""Losses shared by several algorithms."""

from __future__ import annotations

import functools
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


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


@functools.cache
def _dice_losses() -> tuple[nn.Module, nn.Module]:
    """MONAI's soft Dice loss and Dice + cross-entropy, set to fedsim's convention: softmax of the
    logits, foreground classes only, sums over the batch and the pixels (``batch``), smoothing 1
    in numerator and denominator, the mean over the classes. MONAI is imported on first use (it
    imports all of itself and torchvision: seconds and ~300 MB a process that only a segmentation
    loss needs). tests/test_losses.py checks both against the formulas fedsim wrote by hand before."""
    with warnings.catch_warnings():  # its import warns about torch APIs it uses, not about ours
        warnings.simplefilter("ignore", FutureWarning)
        from monai.losses import DiceCELoss, DiceLoss

    dice = dict(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
    return DiceLoss(**dice), DiceCELoss(**dice)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean soft Dice over the foreground classes (batch-level, smoothing 1): logits
    (B, C, H, W), target (B, H, W) class ids with 0 = background (MONAI's ``DiceLoss``)."""
    return _dice_losses()[0](logits, target[:, None])


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy + soft Dice loss (MONAI's ``DiceCELoss``): the supervised
    segmentation loss of the downstream U-Net and of silos in ``task: segmentation`` runs."""
    return _dice_losses()[1](logits, target[:, None])


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
