"""Losses shared by several algorithms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softened_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(z_T / T) ‖ softmax(z_S / T)), averaged over the batch."""
    T = temperature
    kl = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                  reduction="batchmean", log_target=True)
    return T * T * kl


def symmetric_cross_entropy(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.1, beta: float = 1.0,
                            log_zero: float = -4.0) -> torch.Tensor:
    """Symmetric cross-entropy (Wang et al., ICCV 2019), robust to label noise:
    α·CE(p, y) + β·RCE with RCE = −Σ_k p_k log q_k, q the one-hot label and log 0 := A
    (``log_zero``), i.e. RCE = −A (1 − p_y). Batch mean. The paper's CIFAR-10 setting:
    α = 0.1, β = 1, A = −4."""
    ce = F.cross_entropy(logits, target)
    p_y = F.softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    return alpha * ce + beta * (-log_zero * (1.0 - p_y)).mean()
