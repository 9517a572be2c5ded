"""``fedsim.emd``'s similarity (``core.py``): the transport problem's backward against autograd and
gradcheck, hand-worked cases on every backend, dtypes and adaptive pooling, and the errors a user
can cause."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.emd import (
    BACKENDS,
    cost_matrix,
    emd_similarity,
    emd_similarity_from_cost,
    node_weights,
    to_nodes,
    transport_problem,
)
from fedsim.errors import EMDError, FedsimError
from tests.unit.emd.reference import reference_similarity, relu_features


def autograd_problem(u, v, eps=1e-6):
    """The EMD's cost and node weights composed from torch ops, differentiated by autograd."""
    import torch.nn.functional as F

    C = 1.0 - F.normalize(u, dim=-1, eps=1e-12) @ F.normalize(v, dim=-1, eps=1e-12).transpose(1, 2)
    a = torch.relu(u @ v.mean(1, keepdim=True).transpose(1, 2)).squeeze(2) + eps
    b = torch.relu(v @ u.mean(1, keepdim=True).transpose(1, 2)).squeeze(2) + eps
    return C, a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)


@pytest.mark.parametrize("used", [(0, 1, 2), (0,), (1,), (2,), (1, 2)])
def test_transport_problem_backward_equals_autograd(used):
    # the hand-written backward vs autograd through the plain ops, with a zero node (norm
    # floored) and nodes whose cross-reference score is negative (ReLU-clipped weight)
    g = torch.Generator().manual_seed(31)
    u = torch.randn(3, 6, 5, generator=g, dtype=torch.float64)
    v = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    u[0, 2] = 0.0
    v[1, 3] = 0.0
    u.requires_grad_(True)
    v.requires_grad_(True)
    ours, ref = transport_problem(u, v), autograd_problem(u, v)
    assert any(bool((ref[i] < 1e-5).any()) for i in (1, 2))  # some weights were clipped
    for x, y in zip(ours, ref, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-14)
    w = [torch.randn(x.shape, generator=g, dtype=torch.float64) for x in ref]
    g_ours = torch.autograd.grad(sum((ours[i] * w[i]).sum() for i in used), (u, v))
    g_ref = torch.autograd.grad(sum((ref[i] * w[i]).sum() for i in used), (u, v))
    for x, y in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_gradcheck_transport_problem():
    g = torch.Generator().manual_seed(32)
    u = torch.randn(2, 4, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    v = torch.randn(2, 5, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, v: transport_problem(u, v), (u, v))


# ----------------------------------------------------------------------------- hand-worked


def test_hand_worked_2x2():
    # a = b = (1/2, 1/2): keep the diagonal, OT = (0.2 + 0.4) / 2 = 0.3
    C = torch.tensor([[[0.2, 0.8], [0.6, 0.4]]], dtype=torch.float64)
    half = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    # a = (0.7, 0.3), b = (0.4, 0.6), C = 1 - I: x11 = 0.4, x12 = 0.3, x22 = 0.3, OT = 0.3
    C2 = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    a2 = torch.tensor([[0.7, 0.3]], dtype=torch.float64)
    b2 = torch.tensor([[0.4, 0.6]], dtype=torch.float64)
    for backend in ("exact", "cvxpylayers"):
        s = emd_similarity_from_cost(C, half, half, backend=backend)
        assert abs(s.item() - 0.7) < 1e-6
        s2 = emd_similarity_from_cost(C2, a2, b2, backend=backend)
        assert abs(s2.item() - 0.7) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_sets_give_one_with_identity_flow(backend):
    U = relu_features((2, 6, 3, 3), seed=51)
    s = emd_similarity(U, U.clone(), backend=backend, sinkhorn_eps=0.005, sinkhorn_iters=300)
    tol = 1e-2 if backend == "sinkhorn" else 1e-6
    np.testing.assert_allclose(s.numpy(), 1.0, atol=tol)
    if backend == "exact":
        u = to_nodes(U, None)
        C = cost_matrix(u, u).requires_grad_(True)
        a, b = node_weights(u, u)
        emd_similarity_from_cost(C, a, b).sum().backward()
        for i in range(2):  # -dS/dC = x* = diag(a)
            np.testing.assert_allclose(-C.grad[i].numpy(), np.diag(a[i].numpy()), atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_orthogonal_sets_give_zero(backend):
    n = 4
    eye = torch.eye(2 * n, dtype=torch.float64)
    u = (eye[:n] * torch.arange(1.0, n + 1, dtype=torch.float64)[:, None]).unsqueeze(0)
    v = eye[n:].unsqueeze(0)  # every v_q orthogonal to every u_p: c = 1 everywhere
    s = emd_similarity(u, v, backend=backend)
    assert abs(s.item()) < 1e-6


# ----------------------------------------------------------------------------- dtypes, pooling


def test_float32_in_float32_out_and_pooling_is_adaptive_average():
    U = relu_features((3, 4, 10, 10), seed=61, dtype=torch.float32).requires_grad_(True)
    V = relu_features((3, 4, 10, 10), seed=62, dtype=torch.float32)
    s = emd_similarity(U, V, grid=5)
    assert s.dtype == torch.float32 and s.shape == (3,)
    s.sum().backward()
    assert U.grad.dtype == torch.float32 and torch.isfinite(U.grad).all()
    np.testing.assert_allclose(s.detach().numpy(), reference_similarity(U, V, grid=5), atol=1e-5)
    s64 = emd_similarity(U.detach().double(), V.double(), grid=5)
    assert s64.dtype == torch.float64


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_raise(bad):
    U = torch.rand(2, 3, 4, 4)
    U[1, 0, 2, 2] = bad
    with pytest.raises(EMDError, match="NaN or Inf"):
        emd_similarity(U, torch.rand(2, 3, 4, 4))
    with pytest.raises(EMDError, match="NaN or Inf"):
        emd_similarity(torch.rand(2, 3, 4, 4), U)


def test_user_errors_raise_emd_error():
    ok = torch.rand(2, 5, 3)
    cases = [
        (lambda: emd_similarity(torch.rand(2, 0, 3), ok), "empty node set"),
        (lambda: emd_similarity(ok, torch.rand(2, 0, 3)), "empty node set"),
        (lambda: emd_similarity(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), grid=5), "larger than"),
        (lambda: emd_similarity(ok, ok, backend="hungarian"), "unknown backend"),
        (lambda: emd_similarity(ok, torch.rand(3, 5, 3)), "batch sizes differ"),
        (lambda: emd_similarity(ok, torch.rand(2, 5, 4)), "channel counts differ"),
        (lambda: emd_similarity(torch.rand(5, 3), ok), "feature maps"),
        (lambda: emd_similarity(ok, ok, grid=2), "node set"),
    ]
    for call, msg in cases:
        with pytest.raises(EMDError, match=msg):
            call()
    assert issubclass(EMDError, FedsimError)


@pytest.mark.parametrize("shape,grid", [((3, 4, 8, 8), 5), ((2, 3, 10, 7), 3), ((2, 2, 9, 9), 9), ((1, 2, 5, 6), 1)])
def test_adaptive_pool_equals_torch_adaptive_average_pooling(shape, grid):
    import torch.nn.functional as F

    from fedsim.emd.core import adaptive_pool

    X = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(grid)).requires_grad_(True)
    ours, ref = adaptive_pool(X, grid), F.adaptive_avg_pool2d(X, grid)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-14)
    w = torch.randn(ref.shape, dtype=torch.float64)
    g_ours, = torch.autograd.grad((ours * w).sum(), X)
    g_ref, = torch.autograd.grad((ref * w).sum(), X)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-14)
