"""The cvxpylayers backend (``cvxpy_layer.py``): values against HiGHS, gradients against the exact
backend's, and one clear error when cvxpylayers is missing."""

from __future__ import annotations

import sys

import pytest
import torch

from fedsim.emd import (
    emd_similarity,
    emd_similarity_from_cost,
)
from fedsim.errors import EMDError
from tests.unit.emd.reference import highs_ot, random_problem, relu_features


def test_cvxpylayers_values_match_highs():
    C, a, b = random_problem(3, 6, 5, seed=7)
    s = emd_similarity_from_cost(C, a, b, backend="cvxpylayers")
    for i in range(3):
        ref = 1.0 - highs_ot(C[i].numpy(), a[i].numpy(), b[i].numpy())[0]
        assert abs(s[i].item() - ref) <= 1e-4


def test_exact_gradients_agree_with_cvxpylayers():
    U = relu_features((3, 8, 5, 5), seed=21).requires_grad_(True)
    V = relu_features((3, 8, 5, 5), seed=22).requires_grad_(True)
    grads = {}
    for backend in ("exact", "cvxpylayers"):
        s = emd_similarity(U, V, backend=backend)
        grads[backend] = torch.autograd.grad(s.sum(), (U, V))
    for ge, gc in zip(grads["exact"], grads["cvxpylayers"], strict=True):
        assert ((ge - gc).norm() / ge.norm()).item() <= 1e-3


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
