"""The batched EMD path (``emd_similarity_many``: every teacher's and sample's problem in one
solve, one fused autograd node) against the per-problem path it replaces: values and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.emd import emd_similarity, emd_similarity_from_cost, emd_similarity_many, transport_problem
from fedsim.emd.core import adaptive_pool, to_nodes
from fedsim.errors import EMDError
from tests.unit.emd.reference import relu_features


@pytest.mark.parametrize("teachers,shape,grid", [(3, (4, 6, 8, 8), 5), (2, (3, 5, 4), None), (1, (2, 4, 6, 6), 3)])
def test_batched_many_equals_per_problem_path(teachers, shape, grid):
    # the one-call path (one pool per map, one solve for every teacher and sample, one fused
    # autograd node) against the composition it replaces, one problem at a time: pooling,
    # transport_problem, then emd_similarity_from_cost on each (teacher, sample) alone

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

    U = relu_features((3, 4, 6, 6), seed=91)
    Vs = [relu_features((3, 4, 6, 6), seed=92 + j) for j in range(2)]
    s = emd_similarity_many(U, Vs, backend="sinkhorn", grid=3)
    for j, V in enumerate(Vs):
        np.testing.assert_allclose(s[j].numpy(), emd_similarity(U, V, backend="sinkhorn", grid=3).numpy(),
                                   rtol=0, atol=1e-12)
