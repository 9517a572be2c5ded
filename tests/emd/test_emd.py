"""Tests of fedsim.emd against independent references (HiGHS LP, gradcheck, hand-worked cases)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

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


def highs_ot(C: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """Reference: the transport LP solved by scipy's HiGHS. Returns (OT cost, flow)."""
    n, m = C.shape
    A_eq = np.vstack([np.kron(np.eye(n), np.ones((1, m))), np.kron(np.ones((1, n)), np.eye(m))])
    b_eq = np.concatenate([a / a.sum(), b / b.sum()])
    res = linprog(C.ravel(), A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    return float(res.fun), res.x.reshape(n, m)


def reference_similarity(U: torch.Tensor, V: torch.Tensor, grid=None, eps=1e-6) -> np.ndarray:
    """The FedEFM paper's EMD similarity (eq. 3) written out independently in numpy (pooling by explicit block means), then HiGHS."""
    U = U.detach().double().numpy()
    V = V.detach().double().numpy()

    def nodes(X):
        if X.ndim == 3:
            return X
        B, C, H, W = X.shape
        if grid is not None:
            assert H % grid == 0 and W % grid == 0
            X = X.reshape(B, C, grid, H // grid, grid, W // grid).mean(axis=(3, 5))
        return X.reshape(X.shape[0], X.shape[1], -1).transpose(0, 2, 1)

    u, v = nodes(U), nodes(V)
    out = []
    for ui, vi in zip(u, v, strict=True):
        un = ui / np.linalg.norm(ui, axis=1, keepdims=True)
        vn = vi / np.linalg.norm(vi, axis=1, keepdims=True)
        C = 1.0 - un @ vn.T
        a = np.maximum(ui @ vi.mean(0), 0) + eps
        b = np.maximum(vi @ ui.mean(0), 0) + eps
        out.append(1.0 - highs_ot(C, a / a.sum(), b / b.sum())[0])
    return np.array(out)


def random_problem(B, n, m, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(B, n, m, generator=g, dtype=dtype) * 2.0
    a = torch.rand(B, n, generator=g, dtype=dtype) + 0.1
    b = torch.rand(B, m, generator=g, dtype=dtype) + 0.1
    return C, a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)


def relu_features(shape, seed, dtype=torch.float64):
    """Non-negative features (like post-ReLU activations): node weights well above eps."""
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(*shape, generator=g, dtype=dtype) + 0.5)


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


def test_cvxpylayers_values_match_highs():
    C, a, b = random_problem(3, 6, 5, seed=7)
    s = emd_similarity_from_cost(C, a, b, backend="cvxpylayers")
    for i in range(3):
        ref = 1.0 - highs_ot(C[i].numpy(), a[i].numpy(), b[i].numpy())[0]
        assert abs(s[i].item() - ref) <= 1e-4


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


def test_exact_gradients_agree_with_cvxpylayers():
    U = relu_features((3, 8, 5, 5), seed=21).requires_grad_(True)
    V = relu_features((3, 8, 5, 5), seed=22).requires_grad_(True)
    grads = {}
    for backend in ("exact", "cvxpylayers"):
        s = emd_similarity(U, V, backend=backend)
        grads[backend] = torch.autograd.grad(s.sum(), (U, V))
    for ge, gc in zip(grads["exact"], grads["cvxpylayers"], strict=True):
        assert ((ge - gc).norm() / ge.norm()).item() <= 1e-3


# ----------------------------------------------------------------------------- sinkhorn


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


def test_missing_cvxpylayers_raises(monkeypatch):
    from fedsim.emd import cvxpy_layer

    cvxpy_layer._layer.cache_clear()
    monkeypatch.setitem(sys.modules, "cvxpylayers", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "cvxpylayers.torch", None)
    try:
        with pytest.raises(EMDError, match="cvxpylayers"):
            emd_similarity(torch.rand(1, 3, 2), torch.rand(1, 3, 2), backend="cvxpylayers")
    finally:
        cvxpy_layer._layer.cache_clear()


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


# ----------------------------------------------------------------------------- batched path


@pytest.mark.parametrize("teachers,shape,grid", [(3, (4, 6, 8, 8), 5), (2, (3, 5, 4), None), (1, (2, 4, 6, 6), 3)])
def test_batched_many_equals_per_problem_path(teachers, shape, grid):
    # the one-call path (one pool per map, one solve for every teacher and sample, one fused
    # autograd node) against the composition it replaces, one problem at a time: pooling,
    # transport_problem, then emd_similarity_from_cost on each (teacher, sample) alone
    from fedsim.emd import emd_similarity_many
    from fedsim.emd.core import adaptive_pool

    g = torch.Generator().manual_seed(100 + teachers)
    U = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
    Vs = [torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True) for _ in range(teachers)]
    w = torch.randn(teachers, shape[0], generator=g, dtype=torch.float64)  # a generic upstream gradient
    s = emd_similarity_many(U, Vs, grid=grid)
    assert s.shape == (teachers, shape[0])
    got = torch.autograd.grad((s * w).sum(), (U, *Vs))

    def nodes(X):
        return adaptive_pool(X, grid).flatten(2).transpose(1, 2) if grid else X

    ref = torch.stack([
        torch.cat([emd_similarity_from_cost(*transport_problem(nodes(U[i:i + 1]), nodes(V[i:i + 1])))
                   for i in range(shape[0])])
        for V in Vs])
    want = torch.autograd.grad((ref * w).sum(), (U, *Vs))
    np.testing.assert_allclose(s.detach().numpy(), ref.detach().numpy(), rtol=0, atol=1e-6)
    for x, y in zip(got, want, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=0, atol=1e-6)
    # and each row is emd_similarity of U against that teacher alone
    for j, V in enumerate(Vs):
        np.testing.assert_allclose(s[j].detach().numpy(), emd_similarity(U, V, grid=grid).detach().numpy(),
                                   rtol=0, atol=1e-12)


def test_batched_many_float32_and_detached_teachers_like_fedefm():
    # FedEFM's call: float32 features, teachers detached, gradient to the student only
    from fedsim.emd import emd_similarity_many

    U = relu_features((5, 8, 8, 8), seed=81, dtype=torch.float32).requires_grad_(True)
    Vs = [relu_features((5, 8, 8, 8), seed=82 + j, dtype=torch.float32) for j in range(2)]
    s = emd_similarity_many(U, Vs, grid=5)
    assert s.dtype == torch.float32
    gU, = torch.autograd.grad(s.sum(), U)
    U64 = U.detach().double().requires_grad_(True)
    ref = torch.stack([emd_similarity_from_cost(*transport_problem(to_nodes(U64, 5), to_nodes(V.double(), 5)))
                       for V in Vs])
    gref, = torch.autograd.grad(ref.sum(), U64)
    np.testing.assert_allclose(s.detach().numpy(), ref.detach().numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(gU.numpy(), gref.numpy(), rtol=1e-3, atol=1e-5)


def test_batched_many_user_errors():
    from fedsim.emd import emd_similarity_many

    ok = torch.rand(2, 5, 3)
    for call, msg in [
        (lambda: emd_similarity_many(ok, []), "non-empty list"),
        (lambda: emd_similarity_many(ok, ok), "non-empty list"),
        (lambda: emd_similarity_many(ok, [ok, torch.rand(2, 4, 3)]), "same shape"),
        (lambda: emd_similarity_many(ok, [torch.rand(3, 5, 3)]), "batch sizes differ"),
        (lambda: emd_similarity_many(ok, [ok], backend="hungarian"), "unknown backend"),
    ]:
        with pytest.raises(EMDError, match=msg):
            call()


def test_batched_many_rows_equal_single_calls_for_sinkhorn():
    from fedsim.emd import emd_similarity_many

    U = relu_features((3, 4, 6, 6), seed=91)
    Vs = [relu_features((3, 4, 6, 6), seed=92 + j) for j in range(2)]
    s = emd_similarity_many(U, Vs, backend="sinkhorn", grid=3)
    for j, V in enumerate(Vs):
        np.testing.assert_allclose(s[j].numpy(), emd_similarity(U, V, backend="sinkhorn", grid=3).numpy(),
                                   rtol=0, atol=1e-12)
