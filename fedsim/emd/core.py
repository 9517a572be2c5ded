"""DeepEMD-style similarity between two sets of dense features (the FedEFM paper's EMD weight, after DeepEMD: Zhang et al., CVPR 2020).

Pipeline: feature maps (B, C, H, W) -> optional adaptive average pooling to grid x grid ->
node sets (B, n, C); cost c_pq = 1 - cos(u_p, v_q); cross-reference node weights
a_p = max(u_p . mean(v), 0) + eps, b_q = max(v_q . mean(u), 0) + eps, each normalised to 1;
similarity s = sum_pq (1 - c_pq) x*_pq = 1 - OT(C, a, b) with x* the optimal flow.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from fedsim.config.emd import BACKENDS, WEIGHTINGS, EMDConfig
from fedsim.emd.cvxpy_layer import cvxpylayers_flow, load_cvxpylayers
from fedsim.emd.exact import exact_ot, network_simplex, solve_batch_like
from fedsim.emd.sinkhorn import sinkhorn_plan
from fedsim.errors import EMDError

__all__ = [
    "BACKENDS",
    "EMDConfig",
    "load_solver",
    "WEIGHTINGS",
    "cost_matrix",
    "emd_similarity",
    "emd_similarity_from_cost",
    "emd_similarity_many",
    "node_weights",
    "to_nodes",
    "transport_problem",
]


DEFAULT_SINKHORN_EPS = 0.01
DEFAULT_SINKHORN_ITERS = 100


def _check_finite(x: torch.Tensor, name: str) -> None:
    # one reduction instead of an elementwise isfinite: a NaN or ±Inf anywhere makes the sum
    # non-finite (finite features never come near float overflow)
    if not math.isfinite(x.detach().sum().item()):
        raise EMDError(
            f"emd: {name} contains NaN or Inf values; the features (or the model "
            "producing them) have diverged"
        )


def _pool_matrix(size: int, grid: int, like: torch.Tensor) -> torch.Tensor:
    """(grid, size) averaging matrix of adaptive pooling: row i averages the bin
    [floor(i·size/grid), ceil((i+1)·size/grid)), the bins ``F.adaptive_avg_pool2d`` uses."""
    P = torch.zeros(grid, size, dtype=like.dtype, device=like.device)
    for i in range(grid):
        lo, hi = (i * size) // grid, -(-(i + 1) * size // grid)
        P[i, lo:hi] = 1.0 / (hi - lo)
    return P


@functools.lru_cache(maxsize=16)
def _pool_kernel(H: int, W: int, grid: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(grid², H·W) Kronecker product of the row and column averaging matrices, built once per
    shape: building it costs more than the product it serves. Never written to."""
    like = torch.empty((), dtype=dtype, device=device)
    return torch.kron(_pool_matrix(H, grid, like), _pool_matrix(W, grid, like))


def adaptive_pool(X: torch.Tensor, grid: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(X, grid)`` as one matrix product with the Kronecker product of the
    row and column averaging matrices (the same bins): on the small maps the EMD pools, torch's
    generic adaptive kernel cost ~0.7 ms per call, as much as the transport problem it feeds."""
    B, C, H, W = X.shape
    return _pool_nodes(X, grid).transpose(1, 2).reshape(B, C, grid, grid)


def _pool_nodes(X: torch.Tensor, grid: int) -> torch.Tensor:
    """The node set (B, grid², C) of ``adaptive_pool(X, grid)``, contiguous: one broadcast
    product with the pooling kernel lands in node-major order, and every later reduction over
    channels (norms, cosines) runs ~8× faster on it than on a transposed view."""
    B, C, H, W = X.shape
    K = _pool_kernel(H, W, grid, X.dtype, X.device)  # (grid², H·W)
    return torch.matmul(K, X.reshape(B, C, H * W).transpose(1, 2))


def to_nodes(X: torch.Tensor, grid: int | None, name: str = "U") -> torch.Tensor:
    """Node set (B, n, C) from a feature map (B, C, H, W) (pooled to grid x grid) or a node set."""
    if not isinstance(X, torch.Tensor):
        raise EMDError(f"emd: {name} must be a torch.Tensor, got {type(X).__name__}")
    if X.dim() == 4:
        B, C, H, W = X.shape
        if grid is not None:
            if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
                raise EMDError(f"emd: grid must be a positive integer or None, got {grid!r}")
            if grid > H or grid > W:
                raise EMDError(
                    f"emd: grid {grid}x{grid} is larger than the {H}x{W} feature map "
                    f"of {name}; use grid <= {min(H, W)}"
                )
            nodes = _pool_nodes(X, grid)
        else:  # contiguous node-major: see _pool_nodes
            nodes = X.flatten(2).transpose(1, 2).contiguous()
    elif X.dim() == 3:
        if grid is not None:
            raise EMDError(
                f"emd: grid={grid} given but {name} is a node set (B, n, C) of shape "
                f"{tuple(X.shape)}; pooling needs feature maps (B, C, H, W)"
            )
        nodes = X
    else:
        raise EMDError(
            f"emd: {name} must be feature maps (B, C, H, W) or node sets (B, n, C); "
            f"got shape {tuple(X.shape)}"
        )
    if nodes.shape[0] == 0:
        raise EMDError(f"emd: {name} has an empty batch")
    if nodes.shape[1] == 0:
        raise EMDError(f"emd: {name} has an empty node set (shape {tuple(X.shape)})")
    if nodes.shape[2] == 0:
        raise EMDError(f"emd: {name} has zero channels (shape {tuple(X.shape)})")
    if not (nodes.is_floating_point()):
        raise EMDError(f"emd: {name} must be a floating-point tensor, got {nodes.dtype}")
    return nodes


_NORM_EPS = 1e-12  # F.normalize's floor on a vector norm: a zero vector has cosine 0 with everything


def _problem_forward(u: torch.Tensor, v: torch.Tensor, eps: float):
    """(C, a, b) of node sets u (B, n, C), v (B, m, C), and what :func:`_problem_backward` needs."""
    inv_u = 1.0 / u.norm(dim=2, keepdim=True).clamp_min(_NORM_EPS)  # (B, n, 1)
    inv_v = 1.0 / v.norm(dim=2, keepdim=True).clamp_min(_NORM_EPS)
    un, vn = u * inv_u, v * inv_v
    C = torch.baddbmm(torch.ones((), dtype=u.dtype, device=u.device), un, vn.transpose(1, 2),
                      alpha=-1.0)
    mu = u.mean(dim=1, keepdim=True)  # (B, 1, C)
    mv = v.mean(dim=1, keepdim=True)
    ra = torch.bmm(u, mv.transpose(1, 2)).squeeze(2)  # (B, n) raw cross-reference scores
    rb = torch.bmm(v, mu.transpose(1, 2)).squeeze(2)
    a_raw, b_raw = ra.clamp_min(0) + eps, rb.clamp_min(0) + eps
    sa, sb = a_raw.sum(dim=1, keepdim=True), b_raw.sum(dim=1, keepdim=True)
    a, b = a_raw / sa, b_raw / sb
    return C, a, b, (u, v, un, vn, inv_u, inv_v, mu, mv, ra, rb, sa, sb, a, b)


def _problem_backward(saved, gC, ga, gb, need_u: bool = True, need_v: bool = True):
    """Gradients (gu, gv) of the transport problem given those of (C, a, b) (each may be None),
    in place wherever the tensor is our own: at these sizes fresh (B, n, C) temporaries cost
    more than the arithmetic. A gradient not needed comes back None."""
    u, v, un, vn, inv_u, inv_v, mu, mv, ra, rb, sa, sb, a, b = saved
    n, m = u.shape[1], v.shape[1]
    gu = gv = None
    if gC is not None:  # C = 1 - un vn^T, un = u / max(|u|, eps): d/dun = -gC vn
        if need_u:
            gu = _normalize_backward(torch.bmm(gC, vn), un, inv_u)
        if need_v:
            gv = _normalize_backward(torch.bmm(gC.transpose(1, 2), un), vn, inv_v)
    if gu is None and need_u:
        gu = torch.zeros_like(u)
    if gv is None and need_v:
        gv = torch.zeros_like(v)
    if ga is not None:  # a = a_raw / sum(a_raw), a_raw = relu(u . mean(v)) + eps
        gra = _normalized_relu_backward(ga, a, sa, ra)
        if need_u:
            gu.addcmul_(gra.unsqueeze(2), mv)
        if need_v:
            gv.add_(torch.bmm(gra.unsqueeze(1), u), alpha=1.0 / m)
    if gb is not None:
        grb = _normalized_relu_backward(gb, b, sb, rb)
        if need_v:
            gv.addcmul_(grb.unsqueeze(2), mu)
        if need_u:
            gu.add_(torch.bmm(grb.unsqueeze(1), v), alpha=1.0 / n)
    return gu, gv


class _TransportProblem(torch.autograd.Function):
    """Cost matrix and cross-reference node weights in one pass, with a hand-derived backward.

    The same values as composing ``F.normalize``, ``bmm``, ``relu`` and the normalisations under
    autograd, but one backward of two ``bmm`` and a few elementwise ops instead of autograd's
    chain of ~40 small kernels (which cost as much as the exact OT solve at n = 49, B = 64).
    """

    @staticmethod
    def forward(ctx, u, v, eps):  # noqa: D102
        C, a, b, saved = _problem_forward(u, v, eps)
        ctx.save_for_backward(*saved)
        return C, a, b

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gC, ga, gb):  # noqa: D102
        gu, gv = _problem_backward(ctx.saved_tensors, gC, ga, gb)
        return gu, gv, None


class _ExactSimilarity(torch.autograd.Function):
    """s = 1 − OT(C, a, b) of one node set u (B, n, C) against ``copies`` others stacked in
    v (copies·B, m, C), every problem solved exactly in one forward; the backward reuses the
    forward's flows and duals (∂s/∂C = −x*, ∂s/∂a = −f*, ∂s/∂b = −g*) and its normalised nodes.

    The same values as :func:`transport_problem` followed by :func:`~fedsim.emd.exact.exact_ot`
    per teacher, as one autograd node instead of three per teacher: at FedEFM's default (2
    teachers × 32 samples of 25 nodes) the autograd and per-call overhead cost as much as the
    64 network simplex solves.
    """

    @staticmethod
    def forward(ctx, u, v, eps, copies):  # noqa: D102
        uu = u.repeat(copies, 1, 1) if copies > 1 else u
        C, a, b, saved = _problem_forward(uu, v, eps)
        cost, flow, f, g = solve_batch_like(C, a, b)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.save_for_backward(*saved, flow, f, g)
        ctx.copies = copies
        return 1.0 - cost

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: D102
        *saved, flow, f, g = ctx.saved_tensors
        minus = -grad
        gC = flow * minus[:, None, None]  # not in place: a retained graph may run this twice
        gu, gv = _problem_backward(saved, gC, f * minus[:, None], g * minus[:, None],
                                   need_u=ctx.needs_input_grad[0], need_v=ctx.needs_input_grad[1])
        if gu is not None and ctx.copies > 1:  # u was repeated once per copy: sum the copies
            gu = gu.view(ctx.copies, -1, *gu.shape[1:]).sum(0)
        return gu, gv, None, None


def _normalize_backward(P: torch.Tensor, xn: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. x of x/max(|x|, eps) given P = minus the gradient w.r.t. the output.

    (g - xn (xn . g)) / |x| with g = -P, computed in P's storage. Where the norm was floored
    the map is linear (x / eps): no radial projection there.
    """
    dot = torch.linalg.vecdot(xn, P).unsqueeze(2)
    dot.masked_fill_(inv >= 1.0 / _NORM_EPS, 0.0)
    return P.addcmul_(xn, dot, value=-1.0).mul_(-inv)


def _normalized_relu_backward(g, w, total, raw):
    """Gradient w.r.t. raw of w = (relu(raw) + eps) / total, total = sum(relu(raw) + eps)."""
    return (g - (g * w).sum(dim=1, keepdim=True)).div_(total).mul_(raw > 0)


def transport_problem(u: torch.Tensor, v: torch.Tensor, eps: float = 1e-6):
    """The EMD problem of two node sets u (B, n, C), v (B, m, C): (C, a, b).

    C (B, n, m): c_pq = 1 - cos(u_p, v_q) (a zero vector has cosine 0 with everything);
    a (B, n), b (B, m): cross-reference weights relu(u_p . mean(v)) + eps, each normalised
    to sum 1. Differentiable w.r.t. u and v.
    """
    return _TransportProblem.apply(u, v, float(eps))


def cost_matrix(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """c_pq = 1 - cos(u_p, v_q), shape (B, n, m). A zero vector has cosine 0 with everything."""
    return transport_problem(u, v)[0]


def node_weights(u: torch.Tensor, v: torch.Tensor, eps: float = 1e-6):
    """Cross-reference weights a (B, n), b (B, m), each summing to 1."""
    return transport_problem(u, v, eps)[1:]


def emd_similarity_from_cost(
    C: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    backend: str = "exact",
    sinkhorn_eps: float = DEFAULT_SINKHORN_EPS,
    sinkhorn_iters: int = DEFAULT_SINKHORN_ITERS,
    solver_args: dict | None = None,
) -> torch.Tensor:
    """s = sum (1 - C) * x* per batch item (= 1 - OT(C, a, b) when a, b sum to 1).

    C (B, n, m) costs, a (B, n) and b (B, m) positive weights (normalised here to sum 1).
    Differentiable w.r.t. C, a and b; result on C's device and dtype.
    """
    if backend not in BACKENDS:
        raise EMDError(f"emd: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if C.dim() != 3 or a.dim() != 2 or b.dim() != 2:
        raise EMDError(
            f"emd: expected C (B, n, m), a (B, n), b (B, m); got shapes "
            f"{tuple(C.shape)}, {tuple(a.shape)}, {tuple(b.shape)}"
        )
    B, n, m = C.shape
    if a.shape != (B, n) or b.shape != (B, m):
        raise EMDError(
            f"emd: weights of shapes {tuple(a.shape)}, {tuple(b.shape)} do not match "
            f"the cost matrix {tuple(C.shape)}"
        )
    if B == 0 or n == 0 or m == 0:
        raise EMDError(f"emd: empty problem (cost matrix shape {tuple(C.shape)})")
    for x, name in ((C, "cost matrix"), (a, "weights a"), (b, "weights b")):
        _check_finite(x, name)
    if bool((a < 0).any()) or bool((b < 0).any()):
        raise EMDError("emd: node weights must be non-negative")
    if not bool((a.sum(1) > 0).all()) or not bool((b.sum(1) > 0).all()):
        raise EMDError("emd: node weights must not all be zero")
    a = a / a.sum(dim=1, keepdim=True)
    b = b / b.sum(dim=1, keepdim=True)
    return _solve(C, a, b, backend, sinkhorn_eps, sinkhorn_iters, solver_args)


def _solve(C, a, b, backend, sinkhorn_eps, sinkhorn_iters, solver_args) -> torch.Tensor:
    """s = sum (1 - C) x* for checked inputs with a, b summing to 1."""
    if backend == "exact":
        # sum(x*) = 1, so sum (1 - C) x* = 1 - OT
        return 1.0 - exact_ot(C, a, b)
    if backend == "cvxpylayers":
        x = cvxpylayers_flow(C, a, b, solver_args)
        return ((1.0 - C) * x).sum(dim=(1, 2))
    # sinkhorn
    if not sinkhorn_eps > 0:
        raise EMDError(f"emd: sinkhorn_eps must be > 0, got {sinkhorn_eps}")
    if int(sinkhorn_iters) < 1:
        raise EMDError(f"emd: sinkhorn_iters must be >= 1, got {sinkhorn_iters}")
    P = sinkhorn_plan(C, a, b, float(sinkhorn_eps), int(sinkhorn_iters))
    return ((1.0 - C) * P).sum(dim=(1, 2))


def _nodes_pair(U, V, grid, eps, backend):
    """Checked node sets of the student U and the stacked teachers V, in their promoted dtype."""
    if backend not in BACKENDS:
        raise EMDError(f"emd: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    u = to_nodes(U, grid, "U")
    v = to_nodes(V, grid, "V")
    if u.shape[2] != v.shape[2]:
        raise EMDError(f"emd: channel counts differ: U has {u.shape[2]}, V has {v.shape[2]}")
    if u.device != v.device:
        raise EMDError(f"emd: U is on {u.device} but V is on {v.device}")
    if not eps >= 0:
        raise EMDError(f"emd: eps must be >= 0, got {eps}")
    _check_finite(u, "U")
    _check_finite(v, "V")
    dtype = torch.promote_types(u.dtype, v.dtype)
    return u.to(dtype), v.to(dtype)


def _similarities(u, v, copies, backend, eps, sinkhorn_eps, sinkhorn_iters, solver_args) -> torch.Tensor:
    """s (copies·B,) of u (B, n, C) against each of the ``copies`` blocks of v (copies·B, m, C)."""
    if backend == "exact":  # one autograd node, one batch of solves, nothing recomputed backward
        return _ExactSimilarity.apply(u, v, float(eps), copies)
    uu = u.repeat(copies, 1, 1) if copies > 1 else u
    C, a, b = transport_problem(uu, v, eps)  # a, b finite, positive, normalised by construction
    return _solve(C, a, b, backend, sinkhorn_eps, sinkhorn_iters, solver_args)


def emd_similarity(
    U: torch.Tensor,
    V: torch.Tensor,
    *,
    backend: str = "exact",
    grid: int | None = None,
    eps: float = 1e-6,
    sinkhorn_eps: float = DEFAULT_SINKHORN_EPS,
    sinkhorn_iters: int = DEFAULT_SINKHORN_ITERS,
    solver_args: dict | None = None,
) -> torch.Tensor:
    """EMD similarity s (B,) between dense features U and V (eq. 3 of the FedEFM paper: Do et al., ICRA 2025).

    U, V: feature maps (B, C, H, W) — pooled to grid x grid when ``grid`` is given — or node
    sets (B, n, C) and (B, m, C) (n != m allowed). ``eps`` is added to every node weight.
    ``backend``: "exact" (network simplex + analytic backward, default), "cvxpylayers"
    (the paper's KKT-differentiated LP; ``solver_args`` go to diffcp) or "sinkhorn"
    (entropic, ``sinkhorn_eps``/``sinkhorn_iters``). Differentiable w.r.t. U and V through
    the cost and the node weights; result on U's device, in the promoted dtype of U and V.
    """
    u, v = _nodes_pair(U, V, grid, eps, backend)
    if u.shape[0] != v.shape[0]:
        raise EMDError(f"emd: batch sizes differ: U has {u.shape[0]}, V has {v.shape[0]}")
    return _similarities(u, v, 1, backend, eps, sinkhorn_eps, sinkhorn_iters, solver_args)


def emd_similarity_many(
    U: torch.Tensor,
    Vs: Sequence[torch.Tensor],
    *,
    backend: str = "exact",
    grid: int | None = None,
    eps: float = 1e-6,
    sinkhorn_eps: float = DEFAULT_SINKHORN_EPS,
    sinkhorn_iters: int = DEFAULT_SINKHORN_ITERS,
    solver_args: dict | None = None,
) -> torch.Tensor:
    """EMD similarities (len(Vs), B) of U against each of Vs: row j is ``emd_similarity(U, Vs[j])``.

    One student's features against several teachers' (FedEFM's s_ij), as one batch: U is
    pooled once, every teacher's map in one product, and with the exact backend all
    len(Vs)·B transport problems are solved in one call whose backward reuses the forward's
    flows and duals. The arguments are :func:`emd_similarity`'s; every V must have U's shape
    (node sets: U's batch size and channels).
    """
    if not isinstance(Vs, Sequence) or isinstance(Vs, torch.Tensor) or len(Vs) == 0:
        raise EMDError("emd: Vs must be a non-empty list of tensors, one per teacher")
    shapes = {tuple(V.shape) if isinstance(V, torch.Tensor) else None for V in Vs}
    if len(shapes) != 1 or None in shapes:
        raise EMDError(f"emd: every V must be a tensor of the same shape; got {sorted(map(str, shapes))}")
    u, v = _nodes_pair(U, torch.cat(list(Vs)) if len(Vs) > 1 else Vs[0], grid, eps, backend)
    if u.shape[0] * len(Vs) != v.shape[0]:
        raise EMDError(f"emd: batch sizes differ: U has {u.shape[0]}, V has {v.shape[0] // len(Vs)}")
    s = _similarities(u, v, len(Vs), backend, eps, sinkhorn_eps, sinkhorn_iters, solver_args)
    return s.view(len(Vs), u.shape[0])


def load_solver(backend: str) -> None:
    """Import the solver of ``backend`` now (POT for exact, cvxpy for cvxpylayers: about a second
    each), e.g. before the first round, so the round is not billed for it; a no-op otherwise."""
    if backend == "exact":
        network_simplex()
    elif backend == "cvxpylayers":
        load_cvxpylayers()
