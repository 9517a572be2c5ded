"""Batched log-domain Sinkhorn (entropic OT) in torch; runs on any device, autograd-unrolled."""

from __future__ import annotations

import torch

__all__ = ["sinkhorn_plan"]


def sinkhorn_plan(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Entropic transport plan P (B, n, m) for costs C (B, n, m), marginals a (B, n), b (B, m).

    Log-domain updates f <- eps log a - eps LSE((g - C)/eps), g likewise, ``iters`` times;
    the last update is on g, so the column marginals of P equal b exactly.
    Differentiable by autograd through the iterations.
    """
    log_a = torch.log(a)
    log_b = torch.log(b)
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    for _ in range(iters):
        f = eps * log_a - eps * torch.logsumexp((g[:, None, :] - C) / eps, dim=2)
        g = eps * log_b - eps * torch.logsumexp((f[:, :, None] - C) / eps, dim=1)
    return torch.exp((f[:, :, None] + g[:, None, :] - C) / eps)
