"""The exact backend (``exact.py``, POT's network simplex): values and flows against the LP solved by
HiGHS, gradients by gradcheck and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.emd import (
    emd_similarity,
    emd_similarity_from_cost,
)
from tests.unit.emd.reference import highs_ot, random_problem, reference_similarity, relu_features

# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("n,m", [(5, 5), (7, 4), (25, 25), (9, 16)])
def test_exact_from_cost_matches_highs(n, m):
    C, a, b = random_problem(6, n, m, seed=n * 100 + m)
    s = emd_similarity_from_cost(C, a, b, backend="exact")
    for i in range(C.shape[0]):
        ref = 1.0 - highs_ot(C[i].numpy(), a[i].numpy(), b[i].numpy())[0]
        assert abs(s[i].item() - ref) <= 1e-6


def test_exact_similarity_matches_highs_feature_maps_and_node_sets():
    g = torch.Generator().manual_seed(1)
    U = torch.randn(4, 8, 10, 10, generator=g, dtype=torch.float64)
    V = torch.randn(4, 8, 10, 10, generator=g, dtype=torch.float64)
    s = emd_similarity(U, V, grid=5)
    np.testing.assert_allclose(s.numpy(), reference_similarity(U, V, grid=5), atol=1e-6, rtol=0)
    u = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    v = torch.randn(3, 9, 4, generator=g, dtype=torch.float64)  # n != m
    s = emd_similarity(u, v)
    np.testing.assert_allclose(s.numpy(), reference_similarity(u, v), atol=1e-6, rtol=0)


def test_exact_flow_is_the_highs_flow_via_gradient():
    # ds/dC = -x*; a generic random problem has a unique optimum, so HiGHS' flow is x*
    C, a, b = random_problem(3, 6, 7, seed=3)
    C.requires_grad_(True)
    emd_similarity_from_cost(C, a, b).sum().backward()
    for i in range(3):
        _, x = highs_ot(C[i].detach().numpy(), a[i].numpy(), b[i].numpy())
        np.testing.assert_allclose(-C.grad[i].numpy(), x, atol=1e-9)


# ----------------------------------------------------------------------------- gradients


def test_gradcheck_exact_from_cost():
    C, a, b = random_problem(2, 4, 5, seed=11)
    inputs = (C.requires_grad_(True), a.requires_grad_(True), b.requires_grad_(True))
    assert torch.autograd.gradcheck(
        lambda C, a, b: emd_similarity_from_cost(C, a, b, backend="exact"),
        inputs,
        eps=1e-7,
        atol=1e-6,
    )


def test_gradcheck_exact_features():
    # through pooling, cosine costs and cross-reference node weights
    U = relu_features((2, 3, 4, 4), seed=5).requires_grad_(True)
    V = relu_features((2, 3, 4, 4), seed=6).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda U, V: emd_similarity(U, V, grid=2), (U, V), eps=1e-7, atol=1e-6)
    u = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    v = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    assert torch.autograd.gradcheck(
        lambda u, v: emd_similarity(u, v),
        (u.requires_grad_(True), v.requires_grad_(True)),
        eps=1e-7,
        atol=1e-6,
    )


def test_exact_directional_derivative_matches_finite_differences_at_n25():
    # a realistic size (25 nodes, 64 channels) where gradcheck's full Jacobian would be slow
    U = relu_features((4, 25, 64), seed=71)
    V = relu_features((4, 25, 64), seed=72)
    dU = torch.randn(4, 25, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(73))
    dV = torch.randn(4, 25, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(74))
    u, v = U.clone().requires_grad_(True), V.clone().requires_grad_(True)
    gU, gV = torch.autograd.grad(emd_similarity(u, v).sum(), (u, v))
    analytic = (gU * dU).sum((1, 2)) + (gV * dV).sum((1, 2))
    h = 1e-7
    fd = (emd_similarity(U + h * dU, V + h * dV) - emd_similarity(U - h * dU, V - h * dV)) / (2 * h)
    np.testing.assert_allclose(analytic.numpy(), fd.numpy(), rtol=1e-5, atol=1e-8)
