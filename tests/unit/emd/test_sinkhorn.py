"""The Sinkhorn backend (``sinkhorn.py``): it converges to the exact value as ε decreases and is
differentiable."""

from __future__ import annotations

import torch

from fedsim.emd import (
    emd_similarity,
    emd_similarity_from_cost,
)
from tests.unit.emd.reference import random_problem, relu_features


def test_sinkhorn_converges_to_exact_as_eps_decreases():
    C, a, b = random_problem(4, 8, 8, seed=31)
    exact = emd_similarity_from_cost(C, a, b, backend="exact")
    errors = []
    for eps, iters in ((0.2, 200), (0.05, 500), (0.01, 2000)):
        s = emd_similarity_from_cost(C, a, b, backend="sinkhorn", sinkhorn_eps=eps, sinkhorn_iters=iters)
        errors.append((s - exact).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-2


def test_sinkhorn_is_differentiable():
    U = relu_features((2, 4, 3, 3), seed=41).requires_grad_(True)
    V = relu_features((2, 4, 3, 3), seed=42).requires_grad_(True)
    s = emd_similarity(U, V, backend="sinkhorn", sinkhorn_eps=0.05, sinkhorn_iters=100)
    gU, gV = torch.autograd.grad(s.sum(), (U, V))
    assert torch.isfinite(gU).all() and torch.isfinite(gV).all() and gU.abs().sum() > 0
