"""Benchmark of fedsim.emd backends: ms per problem (forward, forward+backward) and value error.

Inputs are node sets (B, n, 64) of non-negative (post-ReLU-like) features, i.e. feature maps
already pooled to a grid of n = grid^2 nodes; the timed call is ``emd_similarity`` (cost
matrix, node weights, OT solve) and, for forward+backward, ``.sum().backward()`` to U and V.
One torch thread; cvxpylayers runs with its default (accurate) solver args, serially.
Value error: max |s - s_HiGHS| over the batch, s_HiGHS from scipy.optimize.linprog("highs").

    python benchmarks/emd.py            # n in {25, 49, 64}, B in {1, 16, 64}
    python benchmarks/emd.py --quick    # n in {25, 49}, B in {1, 64}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import ot
import torch
from rich.console import Console
from scipy.optimize import linprog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import Record, add_record_args  # noqa: E402
from fedsim.emd import cost_matrix, emd_similarity, node_weights  # noqa: E402
from fedsim.report import SECTION, console_table  # noqa: E402

CHANNELS = 64


def highs_similarity(u: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        C = cost_matrix(u.double(), v.double()).numpy()
        a, b = (w.numpy() for w in node_weights(u.double(), v.double()))
    out = []
    for Ci, ai, bi in zip(C, a, b, strict=True):
        n, m = Ci.shape
        A = np.vstack([np.kron(np.eye(n), np.ones((1, m))), np.kron(np.ones((1, n)), np.eye(m))])
        res = linprog(Ci.ravel(), A_eq=A, b_eq=np.concatenate([ai, bi]), bounds=(0, None), method="highs")
        out.append(1.0 - res.fun)
    return np.array(out)


def pot_loop(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The plain alternative: ot.emd2 per batch item (POT's torch backend gives the gradient)."""
    C = cost_matrix(u, v)
    a, b = node_weights(u, v)
    a, b, C = a.double(), b.double(), C.double()
    return torch.stack(
        [1.0 - ot.emd2(a[i], b[i] * (a[i].sum() / b[i].sum()), C[i]) for i in range(C.shape[0])]
    ).to(u.dtype)


METHODS = {
    "cvxpylayers": lambda u, v: emd_similarity(u, v, backend="cvxpylayers"),
    "exact": lambda u, v: emd_similarity(u, v, backend="exact"),
    "ot.emd2 loop": pot_loop,
    "sinkhorn": lambda u, v: emd_similarity(u, v, backend="sinkhorn"),
}


def timed(fn, u, v, backward: bool, budget: float) -> float:
    """Median seconds per call, repeating until ~budget seconds (at least once, after warm-up)."""

    def once():
        t = time.perf_counter()
        if backward:
            uu, vv = u.detach().requires_grad_(True), v.detach().requires_grad_(True)
            fn(uu, vv).sum().backward()
        else:
            with torch.no_grad():
                fn(u, v)
        return time.perf_counter() - t

    first = once()  # warm-up (layer construction, caches)
    times = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < budget and len(times) < 50):
        times.append(once())
        if first > budget:
            break
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced grid")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
    add_record_args(parser, "emd")
    args = parser.parse_args()
    rec = Record.from_args(args, "emd", __file__, variant="quick" if args.quick else "")
    torch.set_num_threads(1)
    ns = (25, 49) if args.quick else (25, 49, 64)
    Bs = (1, 64) if args.quick else (1, 16, 64)

    columns = ["n", "B", "method", "fwd ms", "fwd+bwd ms", "max |Δs| vs HiGHS", "exact speed-up (fwd+bwd)"]
    cells = []
    g = torch.Generator().manual_seed(0)
    for n in ns:
        for B in Bs:
            u = torch.relu(torch.randn(B, n, CHANNELS, generator=g) + 0.2)
            v = torch.relu(torch.randn(B, n, CHANNELS, generator=g) + 0.2)
            ref = highs_similarity(u, v)
            rows = {}
            for name, fn in METHODS.items():
                with torch.no_grad():
                    err = float(np.abs(fn(u, v).double().numpy() - ref).max())
                fwd = timed(fn, u, v, False, args.budget) / B * 1e3
                fb = timed(fn, u, v, True, args.budget) / B * 1e3
                rows[name] = (fwd, fb, err)
            exact_fb = rows["exact"][1]
            for name, (fwd, fb, err) in rows.items():
                cells.append([
                    str(n),
                    str(B),
                    name,
                    f"{fwd:.3f}",
                    f"{fb:.3f}",
                    f"{err:.1e}",
                    f"{fb / exact_fb:.0f}x" if name != "exact" else "1x",
                ])
            cells.append(SECTION)
    table = console_table(columns, cells, justify=["right", "right", "left", *["right"] * 4],
                          title="fedsim.emd: ms per problem (1 thread), value error vs HiGHS")
    Console(width=140).print(table)
    note = "speed-up column: (that method's fwd+bwd time) / (exact's), same inputs, same run"
    print(note)
    rec.table(table)
    rec.note(note)
    rec.write()


if __name__ == "__main__":
    main()
