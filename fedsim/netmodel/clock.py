"""Arc delays of a trained topology and the simulated network clock (max-plus recursion).

Arc delays for a :class:`~fedsim.topology.Topology` (``arc_delays``) follow MultigraphFL's delay model with the
topology's own degrees:

    d(j→i) = T_c(j) + ℓ(j,i) + max(δ⁺(j)·u_j, δ⁻(i)·u_i, τ(j,i)),   τ = M / bandwidth

where ℓ and the bandwidth come, in this order of preference, from

1. the edge's ``latency_ms`` / ``bandwidth_mbps`` when any edge of the topology carries one of
   them (overlays written by ``fedsim topology overlay`` do); an edge missing one of them uses
   ``0.0085·distance_km + 4`` (or 4 ms without distance) and the core bandwidth (1 Gbit/s);
2. else, when every edge has ``distance_km`` (a network underlay), the connectivity graph:
   shortest path on distance, ℓ = 0.0085·D + 4, bandwidth = 1 Gbit/s ÷ hops;
3. else defaults: ℓ = 4 ms (the model's fixed latency) and one 1 Gbit/s hop.

T_c and u = M / access capacity are per silo (``compute_ms`` / ``access_gbps`` on the silo) with the
:class:`DelayModel` values as defaults.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedsim.netmodel.model import DelayModel, _silo_vectors, connectivity_graph, degrees
from fedsim.netmodel.overlays import matcha_active_arcs, multigraph_active_arcs
from fedsim.topology import Topology


def link_parameters(topology: Topology, model: DelayModel | None = None) -> dict[tuple[int, int], tuple[float, float]]:
    """(latency ℓ ms, transmission τ ms) per arc (j, i) of the topology (rules in the module doc)."""
    model = model or DelayModel()
    arcs = topology.arcs
    has_link = any(e.latency_ms is not None or e.bandwidth_mbps is not None for e in topology.edges)
    underlay = bool(topology.edges) and all(e.distance_km is not None for e in topology.edges)
    out: dict[tuple[int, int], tuple[float, float]] = {}
    if not has_link and underlay:
        conn = connectivity_graph(_undirected(topology), model)
        for j, i in arcs:
            out[(j, i)] = (float(conn.latency[j, i]), float(conn.tau[j, i]))
        return out
    for j, i in arcs:
        e = topology.edge(j, i)
        lat = e.latency_ms if e is not None else None
        if lat is None:
            dist = e.distance_km if e is not None else None
            lat = float(model.latency_ms(dist)) if dist is not None else model.base_latency_ms
        bw = e.bandwidth_mbps if e is not None and e.bandwidth_mbps is not None else model.core_mbps
        out[(j, i)] = (float(lat), float(model.transmission_ms(bw)))
    return out


def _undirected(topology: Topology) -> Topology:
    if not topology.directed:
        return topology
    seen, edges = set(), []
    for e in topology.edges:
        k = (min(e.src, e.dst), max(e.src, e.dst))
        if k not in seen:
            seen.add(k)
            edges.append(e)
    return Topology(topology.name, topology.silos, edges, False, topology.source, dict(topology.extra))


def arc_delays(topology: Topology, model: DelayModel | None = None) -> dict[tuple[int, int], float]:
    """d(j→i) in ms for every arc (j, i) of the topology, with its own degrees (module doc)."""
    model = model or DelayModel()
    links = link_parameters(topology, model)
    compute, access = _silo_vectors(topology, model)
    out_deg, in_deg = degrees(topology.num_silos, topology.arcs)
    return {
        (j, i): float(compute[j] + lat + max(out_deg[j] * access[j], in_deg[i] * access[i], tau))
        for (j, i), (lat, tau) in links.items()
    }


def request_delays(topology: Topology, model: DelayModel | None = None) -> dict[tuple[int, int], float]:
    """For round trips: d_req(i→j) for every arc (j, i), the request from i to its in-neighbour j
    over the same link. i sends δ⁻(i) requests and j receives δ⁺(j) of them."""
    model = model or DelayModel()
    links = link_parameters(topology, model)
    compute, access = _silo_vectors(topology, model)
    out_deg, in_deg = degrees(topology.num_silos, topology.arcs)
    return {
        (j, i): float(compute[i] + lat + max(in_deg[i] * access[i], out_deg[j] * access[j], tau))
        for (j, i), (lat, tau) in links.items()
    }


def clock_step(
    times: np.ndarray,
    arcs: list[tuple[int, int]],
    delays: np.ndarray,
    compute: np.ndarray,
    active: np.ndarray | None = None,
    round_trip: np.ndarray | None = None,
) -> np.ndarray:
    """One round of the max-plus recursion (pure; returns new times).

    ``t_i(k+1) = max(t_i(k) + c_i, max_{active (j,i)} t_j(k) + d(j→i))`` with c_i = compute time,
    or, when ``round_trip`` (per-arc request+reply delay) is given,
    ``c_i = max(T_c(i), max_{active (j,i)} d_req(i→j) + d(j→i))``.
    """
    times = np.asarray(times, dtype=float)
    src = np.fromiter((a for a, _ in arcs), dtype=int, count=len(arcs))
    dst = np.fromiter((b for _, b in arcs), dtype=int, count=len(arcs))
    mask = np.ones(len(arcs), dtype=bool) if active is None else np.asarray(active, dtype=bool)
    own = np.asarray(compute, dtype=float).copy()
    if round_trip is not None:
        np.maximum.at(own, dst[mask], np.asarray(round_trip)[mask])
    new = times + own
    np.maximum.at(new, dst[mask], times[src[mask]] + np.asarray(delays)[mask])
    return new


class SimClock:
    """Simulated network time of every silo of a training run.

    >>> clock = SimClock(topology, DelayModel(model_bits=..., compute_ms=...))
    >>> clock.step()          # after each communication round; returns per-silo times (ms)
    >>> clock.now_ms          # max over silos: the ``sim_time_ms`` to log

    Plain gossip: silo i finishes round k+1 when its own computation and every in-neighbour's
    model have arrived: t_i(k+1) = max_{j ∈ N_in(i) ∪ {i}} t_j(k) + d(j→i), d(i→i) = T_c(i).

    ``round_trip=True`` (FedEFM): silo i sends a request to each in-neighbour j, which replies once
    it has its own round-k state. The reply reaches i at max(t_i(k) + d_req(i→j), t_j(k)) + d(j→i),
    so t_i(k+1) = max(t_i(k) + max(T_c(i), max_j d_req(i→j) + d(j→i)), max_j t_j(k) + d(j→i)) —
    still max-plus linear; its growth rate is the max cycle mean of that recursion.

    Per-round active arcs: ``step(active_arcs)`` takes a set of arcs (j, i); inactive in-neighbours
    are not waited for. With ``active_arcs=None`` a multigraph overlay (edges with ``parallel``)
    uses :func:`multigraph_active_arcs` for the current round, a MATCHA overlay
    :func:`matcha_active_arcs`, anything else all arcs.
    """

    def __init__(
        self,
        topology: Topology,
        model: DelayModel | None = None,
        *,
        round_trip: bool = False,
        delays: dict[tuple[int, int], float] | None = None,
        start_ms: float = 0.0,
        request_model: DelayModel | None = None,
    ) -> None:
        self.topology = topology
        self.model = model or DelayModel()
        d = delays if delays is not None else arc_delays(topology, self.model)
        self.arcs = list(d)
        self._index = {a: k for k, a in enumerate(self.arcs)}
        self.delays = np.array([d[a] for a in self.arcs], dtype=float)
        self.compute, _ = _silo_vectors(topology, self.model)
        self.round_trip: np.ndarray | None = None
        self._requests: np.ndarray | None = None
        if round_trip:  # the request may weigh more than the reply (``request_model``: a model with its optimiser)
            req = request_delays(topology, request_model or self.model)
            self._requests = np.array([req[a] for a in self.arcs])
            self.round_trip = self._requests + self.delays
        self._src = np.fromiter((a for a, _ in self.arcs), dtype=int, count=len(self.arcs))
        self._dst = np.fromiter((b for _, b in self.arcs), dtype=int, count=len(self.arcs))
        self.times = np.full(topology.num_silos, float(start_ms))
        self.round = 0
        self._multigraph = any("parallel" in e.extra for e in topology.edges)
        self._matcha = "matching_probabilities" in topology.extra

    def active_mask(self, active_arcs: Iterable[tuple[int, int]] | None) -> np.ndarray | None:
        if active_arcs is None:
            if self._multigraph:
                active_arcs = multigraph_active_arcs(self.topology, self.round)
            elif self._matcha:
                active_arcs = matcha_active_arcs(self.topology, self.round)
            else:
                return None
        mask = np.zeros(len(self.arcs), dtype=bool)
        for a in active_arcs:
            k = self._index.get(tuple(a))
            if k is not None:
                mask[k] = True
        return mask

    def step(self, active_arcs: Iterable[tuple[int, int]] | None = None,
             compute_scale: dict[int, float] | None = None, idle: Iterable[int] = ()) -> np.ndarray:
        """Advance one round; returns a copy of the per-silo times (ms).

        ``compute_scale``: silo → factor on its compute time this round (a straggler; the
        compute part of its outgoing arcs and of its requests slows with it). ``idle``: silos
        sitting the round out (their time stays; give ``active_arcs`` without their arcs)."""
        delays, compute, round_trip = self.delays, self.compute, self.round_trip
        if compute_scale:
            scale = np.ones(len(self.compute))
            for i, f in compute_scale.items():
                scale[i] = f
            compute = self.compute * scale
            extra = compute - self.compute  # what the slower compute adds, per silo
            delays = self.delays + extra[self._src]
            if self._requests is not None:
                round_trip = self._requests + extra[self._dst] + delays
        new = clock_step(self.times, self.arcs, delays, compute, self.active_mask(active_arcs), round_trip)
        for i in idle:
            new[i] = self.times[i]
        self.times = new
        self.round += 1
        return self.times.copy()

    def run(self, rounds: int) -> np.ndarray:
        for _ in range(rounds):
            self.step()
        return self.times.copy()

    @property
    def now_ms(self) -> float:
        """The simulated time of the slowest silo."""
        return float(self.times.max())
