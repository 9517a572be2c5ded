"""How silos' weights are combined (``aggregation:``): the weighted mean, or a Byzantine-robust
rule — coordinate-wise weighted median, coordinate-wise weighted trimmed mean, or (multi-)Krum.

One rule serves every place where models meet: the CFL server (FedAvg, FedProx, FedDF and any
algorithm that uses :meth:`fedsim.federation.Federation.upload_to_server`), the DFL mixes (gossip,
FedEFM, the released rule: :func:`fedsim.algorithms.gossip.mix`) and Θ
(:meth:`fedsim.federation.Federation.aggregate`). Each place hands it n inputs x_i with weights
w_i: ϑ_i n_i for the server and Θ (as the mean), the mixing weights for a mix (gossip's
Metropolis–Hastings row W_ij, FedEFM's s and (1 − s)/|N|). An input of weight 0 (ϑ_i = 0, absent)
is left out. Per coordinate, with the values sorted and each input occupying an interval of
length w_i on the weight axis [0, W], W = Σ w_i:

* ``mean`` — Σ w_i x_i / W (the default; its code path is the one before this module existed);
* ``median`` — the midpoint of the minimisers of Σ w_i |x_i − v| (the value where the cumulative
  weight crosses W/2; on a tie, the midpoint of the two values around it): with equal weights,
  the ordinary median (the mean of the two middle values for even n);
* ``trimmed_mean`` — the weighted mean over the middle [βW, (1 − β)W] of the weight axis,
  β = ``aggregation_trim``: weight βW is trimmed at each end, an input straddling a cut counts
  with the part of its weight inside. With equal weights and βn whole, the usual β-trimmed mean
  (βn inputs dropped at each end); β < ½ never trims everything;
* ``krum`` — Krum (Blanchard et al., NeurIPS 2017): each input's score is the sum of its squared
  distances to its n − f − 2 nearest other inputs (f = ``krum_f``), and the input of lowest score
  wins (ties: the lower silo id); multi-Krum (``krum_m`` = m > 1) takes the weighted mean of the
  m lowest-scored. The weights only weigh that mean: Krum's choice is unweighted. It needs
  n > 2f + 2 inputs, checked before any rank starts (:func:`check_aggregation`); in a round with
  fewer (a dropout, a link down, an idle arc) it tolerates as many as fit, f' = ⌊(n − 3)/2⌋, and
  with fewer than 3 inputs, which Krum cannot tell apart, it takes their weighted median.

Computed in float64 on the stacked inputs (integer buffers rounded back, or in a mix kept from
the silo's own model, as the mean does); the server and Θ gather every silo's state on every
rank for it (:func:`fedsim.transport.gather_states`: N model copies in memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fedsim.errors import ConfigError

#: coordinates sorted at a time by median / trimmed_mean (bounds the memory of the sort)
_CHUNK = 1 << 22
#: a cumulative weight within this share of W of W/2 is a tie of the median (rounding of the sums)
_TIE = 1e-9


@dataclass(frozen=True)
class Aggregation:
    """The rule of ``aggregation:`` with its parameters (see the module docstring)."""

    kind: str = "mean"
    trim: float = 0.1  # β of trimmed_mean
    krum_f: int = 1
    krum_m: int = 1

    @classmethod
    def of(cls, cfg) -> Aggregation:
        return cls(cfg.aggregation, cfg.aggregation_trim, cfg.krum_f, cfg.krum_m)

    @property
    def is_mean(self) -> bool:
        return self.kind == "mean"

    def combine_rows(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The rule over the rows of ``x`` (n × p, float64) with weights ``w`` (n); rows of weight
        0 are left out."""
        keep = w > 0
        if not bool(keep.any()):
            raise ValueError("no silo contributes to the aggregate (every weight is 0)")
        if not bool(keep.all()):  # (indexing copies the stack: only when someone is left out)
            x, w = x[keep], w[keep]
        w = w.to(x.dtype)
        if self.kind == "mean":
            return (w[:, None] * x).sum(0) / w.sum()
        if self.kind == "median":
            return _by_chunks(x, lambda c: weighted_median(c, w))
        if self.kind == "trimmed_mean":
            return _by_chunks(x, lambda c: weighted_trimmed_mean(c, w, self.trim))
        if self.kind == "krum":
            return krum(x, w, self.krum_f, self.krum_m)
        raise ValueError(f"unknown aggregation {self.kind!r}")


def _by_chunks(x: torch.Tensor, fn) -> torch.Tensor:
    step = max(1, _CHUNK // max(x.shape[0], 1))
    return torch.cat([fn(x[:, s : s + step]) for s in range(0, x.shape[1], step)]) if x.shape[1] else x[0]


def weighted_median(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per column of ``x`` (n × p): the midpoint of the minimisers of Σ_i w_i |x_i − v| (w > 0)."""
    values, order = x.sort(dim=0, stable=True)
    cum = w[order].cumsum(0)
    total = cum[-1]
    half = total / 2
    tol = _TIE * total
    first = (cum < half - tol).sum(0, keepdim=True)  # the first row whose cumulative weight reaches W/2
    at = values.gather(0, first)[0]
    tie = (cum.gather(0, first)[0] - half).abs() <= tol
    after = values.gather(0, (first + 1).clamp(max=x.shape[0] - 1))[0]
    return torch.where(tie, (at + after) / 2, at)


def weighted_trimmed_mean(x: torch.Tensor, w: torch.Tensor, trim: float) -> torch.Tensor:
    """Per column of ``x`` (n × p): the weighted mean over [trim·W, (1 − trim)·W] of the sorted
    values laid end to end on the weight axis (0 <= trim < ½)."""
    values, order = x.sort(dim=0, stable=True)
    ws = w[order]
    hi = ws.cumsum(0)
    lo = hi - ws
    total = hi[-1:]
    cut = trim * total
    kept = (torch.minimum(hi, total - cut) - torch.maximum(lo, cut)).clamp(min=0)
    return (kept * values).sum(0) / kept.sum(0)


def krum_scores(x: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of each row of ``x`` (n × p): the sum of its squared distances to its
    n − f − 2 nearest other rows (Blanchard et al. 2017)."""
    n = x.shape[0]
    d2 = torch.stack([((x - x[i]) ** 2).sum(1) for i in range(n)])  # exact float64 sums, no matmul shortcut
    d2.fill_diagonal_(float("inf"))
    nearest = n - f - 2
    return d2.sort(dim=1).values[:, :nearest].sum(1)


def krum(x: torch.Tensor, w: torch.Tensor, f: int, m: int = 1) -> torch.Tensor:
    """(Multi-)Krum of the rows of ``x`` (n × p): the weighted mean of the ``m`` rows of lowest
    :func:`krum_scores` (ties: the lower row). With fewer rows than 2f + 3 it tolerates
    f' = ⌊(n − 3)/2⌋; below 3 rows, the weighted median."""
    n = x.shape[0]
    if n < 3:
        return _by_chunks(x, lambda c: weighted_median(c, w))
    f = min(f, (n - 3) // 2)
    chosen = krum_scores(x, f).sort(stable=True).indices[: max(1, min(m, n - f))]
    chosen = chosen.sort().values  # sum in row order: the result does not depend on the scores' order
    wc = w[chosen]
    return (wc[:, None] * x[chosen]).sum(0) / wc.sum()


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A state as one float64 vector (the layout :func:`unflatten` reads back)."""
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])


def unflatten(vector: torch.Tensor, template: Sequence[torch.Tensor],
              own: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``vector`` as tensors shaped and typed like ``template``; integer tensors are rounded back,
    or taken from ``own`` when given (a mix keeps the silo's own counters)."""
    out = []
    for n, (t, chunk) in enumerate(zip(template, vector.split([t.numel() for t in template]))):
        if not t.is_floating_point():
            if own is not None:
                out.append(own[n])
                continue
            chunk = chunk.round()
        out.append(chunk.view(t.shape).to(t.dtype))
    return out


def combine_local(rule: Aggregation, own: list[torch.Tensor], weights: Mapping[int, float], self_id: int,
                  received: Mapping[int, Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """A DFL mix under ``rule``: silo ``self_id``'s ``own`` state and the ``received`` ones, rows in
    silo order (Krum's ties go to the lower id, as on the server), weighted by ``weights``;
    integer buffers stay its own."""
    states = {**received, self_id: own}
    ids = sorted(states)
    rows = torch.stack([flatten(states[i]) for i in ids])
    w = torch.tensor([float(weights[i]) for i in ids], dtype=torch.float64, device=rows.device)
    return unflatten(rule.combine_rows(rows, w), own, own=own)


def check_aggregation(cfg, scenario, training, algorithm, forms_foundation: bool) -> None:
    """What ``aggregation:`` needs of the run, refused before any rank starts: model weights to
    combine, no client-level DP (its noise is calibrated to the mean), and for Krum more than
    2f + 2 inputs wherever it combines (the server and Θ: the silos with ϑ = 1; a DFL mix: the
    silo and the neighbours it mixes with, :meth:`Algorithm.mix_inputs`) and krum_m <= n − f."""
    rule = Aggregation.of(cfg)
    if rule.is_mean:
        return
    name = cfg.algorithm
    if not algorithm.shares_weights:
        raise ConfigError(f"aggregation: {rule.kind} combines model weights, and algorithm {name!r} exchanges only "
                          "outputs on the public set; use aggregation: mean")
    if cfg.privacy.mode == "client":
        raise ConfigError(f"aggregation: {rule.kind} with privacy.mode: client: DP-FedAvg calibrates its noise to "
                          "the mean of the clipped updates; use aggregation: mean or privacy.mode: sample")
    if rule.kind != "krum":
        return
    sizes: list[tuple[int, str]] = []
    if forms_foundation or scenario.via_server:
        status = cfg.accumulation_status or [1] * training.num_silos
        where = "the CFL server and Θ" if scenario.via_server else "Θ"
        sizes.append((sum(status) if not scenario.pooled else 1,
                      f"{where} (the silos with accumulation status 1"
                      f"{', one pooled silo in cll' if scenario.pooled else ''})"))
    if scenario.decentralized:
        mixes = [(algorithm.mix_inputs(cfg, scenario, training, i), i) for i in range(training.num_silos)]
        mixes = [(n, i) for n, i in mixes if n is not None]
        if mixes:
            n, i = min(mixes)
            sizes.append((n, f"silo {i}'s mix (itself and {n - 1} neighbour(s) on {training.name})"))
    f, m = rule.krum_f, rule.krum_m
    for n, what in sizes:
        if n <= 2 * f + 2:
            fit = f"use krum_f <= {(n - 3) // 2}" if n >= 3 else "Krum needs at least 3"
            raise ConfigError(f"aggregation: krum with krum_f {f} needs more than 2·{f} + 2 = {2 * f + 2} inputs, and "
                              f"{what} has {n}; {fit}, or use aggregation: median or trimmed_mean")
        if m > n - f:
            raise ConfigError(f"krum_m {m} averages more inputs than Krum keeps: {what} has {n} and krum_f is {f}; "
                              f"use krum_m <= {n - f}")
