"""Independent references for the EMD tests: the transport LP solved by HiGHS (scipy), and the
similarity written from its definition."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linprog


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
