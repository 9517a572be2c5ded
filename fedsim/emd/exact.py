"""Exact optimal transport on a batch: POT's network simplex plus an analytic backward.

The forward solves every problem of the batch with POT's C++ network simplex
(``ot.lp.emd_wrap.emd_c``, called directly to skip ``ot.emd``'s per-call checks).
The backward uses LP sensitivity: for OT(C, a, b) = min <C, x> over the transport
polytope, dOT/dC = x*, dOT/da = f*, dOT/db = g* (f*, g* the optimal dual potentials,
centred because they are defined up to a constant shift f + k, g - k).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch

from fedsim.errors import EMDError

__all__ = ["exact_ot", "solve_batch", "solve_batch_like"]

_MAX_ITER = 1_000_000


_EMD_C_ARGS: tuple | None = None  # extra positional arguments this POT version's emd_c takes


@functools.cache
def network_simplex():
    """POT's compiled network simplex ``emd_c``, called directly to skip ``ot.emd``'s per-call
    checks; POT (~1 s to import, with its dependencies) is imported on the first call, so only
    runs that solve exactly pay for it."""
    try:
        from ot.lp.emd_wrap import emd_c
    except ImportError:  # pragma: no cover - older POT layouts
        from ot.lp import emd_c
    return emd_c


def _emd_c_args() -> tuple:
    """The positional arguments after (a, b, M) this POT version's ``emd_c`` takes."""
    global _EMD_C_ARGS
    if _EMD_C_ARGS is None:
        one = np.ones(1)
        try:  # POT >= 0.9.6: emd_c(a, b, M, max_iter, numThreads, alpha_init, beta_init)
            network_simplex()(one, one, np.zeros((1, 1)), _MAX_ITER, 1, None, None)
            _EMD_C_ARGS = (_MAX_ITER, 1, None, None)
        except TypeError:  # POT 0.9.4/0.9.5: emd_c(a, b, M, max_iter, numThreads)
            _EMD_C_ARGS = (_MAX_ITER, 1)
    return _EMD_C_ARGS


def solve_batch(C: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Solve B transport problems exactly.

    C: (B, n, m), a: (B, n), b: (B, m), float64, each a[i], b[i] summing to 1.
    Returns (cost (B,), flow (B, n, m), f (B, n), g (B, m)). f and g are each centred to
    mean 0: as gradients w.r.t. a and b (which sum to 1) only their centred parts matter;
    the cost is computed as <C, x*>, not from the duals.
    """
    C = np.ascontiguousarray(C, dtype=np.float64)
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    # the network simplex needs exactly matching masses: renormalise in float64
    a = a / a.sum(axis=1, keepdims=True)
    b = b / b.sum(axis=1, keepdims=True)
    b = b * (a.sum(axis=1) / b.sum(axis=1))[:, None]
    # POT has no batched exact solver: one C call per problem, driven by map (no Python-level
    # loop body); at 25 x 25 a call is ~45-70 us of network simplex and ~2 us of call overhead
    args = [itertools.repeat(x) for x in _emd_c_args()]
    flows, _, fs, gs, codes = zip(*map(network_simplex(), a, b, C, *args), strict=True)
    codes = np.asarray(codes)
    if (codes != 1).any():
        i = int(np.flatnonzero(codes != 1)[0])
        raise EMDError(
            f"exact EMD: network simplex did not reach the optimum for batch item {i} "
            f"(result code {codes[i]}); check the cost matrix for huge or degenerate values"
        )
    flow, f, g = np.stack(flows), np.stack(fs), np.stack(gs)
    cost = np.einsum("bij,bij->b", C, flow)
    f -= f.mean(axis=1, keepdims=True)
    g -= g.mean(axis=1, keepdims=True)
    return cost, flow, f, g


def solve_batch_like(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """:func:`solve_batch` of tensors (detached, solved in float64 on the CPU): (cost, flow, f, g)
    as tensors on C's device in C's dtype."""
    out = solve_batch(*(x.detach().to("cpu", torch.float64).numpy() for x in (C, a, b)))
    return tuple(torch.from_numpy(x).to(device=C.device, dtype=C.dtype) for x in out)


class _ExactOT(torch.autograd.Function):
    """OT(C, a, b) per batch item, with the LP-sensitivity backward."""

    @staticmethod
    def forward(ctx, C, a, b):  # noqa: D102
        cost, flow, f, g = solve_batch_like(C, a, b)
        ctx.save_for_backward(flow, f, g)
        return cost

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: D102
        flow, f, g = ctx.saved_tensors
        dC = flow * grad[:, None, None] if ctx.needs_input_grad[0] else None
        da = f * grad[:, None] if ctx.needs_input_grad[1] else None
        db = g * grad[:, None] if ctx.needs_input_grad[2] else None
        return dC, da, db


def exact_ot(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact OT cost (B,) of cost matrices C (B, n, m) and weights a (B, n), b (B, m)."""
    return _ExactOT.apply(C, a, b)
