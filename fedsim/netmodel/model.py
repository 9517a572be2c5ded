"""MultigraphFL's network delay model (Marfoq et al., NeurIPS 2020): constants, connectivity graph, arc delays
and the maximum cycle mean (Karp).

Units: times in ms, sizes in bits. ``Gbit/s = 10⁶ bit/ms``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import count

import networkx as nx
import numpy as np

from fedsim.config.net import DEFAULT_ACCESS_GBPS
from fedsim.errors import TopologyError
from fedsim.topology import Topology

FEMNIST_MODEL_BITS = 4_843_243
FEMNIST_COMPUTE_MS = 4.6


@dataclass(frozen=True)
class DelayModel:
    """Constants of the delay model.

    * ``model_bits`` M: size of one model copy;
    * ``compute_ms`` T_c: local computation time per round (a silo's ``compute_ms`` overrides it);
    * ``access_gbps`` A: each silo's access link, each way (a silo's ``access_gbps`` overrides it);
    * ``core_gbps`` C: every underlay (core) link; a path of h hops gets C/h;
    * latency of a path of D km: ``ms_per_km·D + base_latency_ms``.
    """

    model_bits: float = FEMNIST_MODEL_BITS
    compute_ms: float = FEMNIST_COMPUTE_MS
    access_gbps: float = DEFAULT_ACCESS_GBPS
    core_gbps: float = 1.0
    ms_per_km: float = 0.0085
    base_latency_ms: float = 4.0

    def __post_init__(self) -> None:
        for name in ("model_bits", "access_gbps", "core_gbps"):
            if not getattr(self, name) > 0:
                raise TopologyError(f"delay model: {name} must be positive, got {getattr(self, name)!r}")
        for name in ("compute_ms", "ms_per_km", "base_latency_ms"):
            if not getattr(self, name) >= 0:
                raise TopologyError(f"delay model: {name} must be non-negative, got {getattr(self, name)!r}")

    @property
    def core_bits_per_ms(self) -> float:
        return self.core_gbps * 1e6

    @property
    def core_mbps(self) -> float:
        return self.core_gbps * 1e3

    def access_ms(self, access_gbps: float | None = None) -> float:
        """u: time to push one model copy through an access link (upload = download)."""
        return self.model_bits / ((access_gbps or self.access_gbps) * 1e6)

    def latency_ms(self, distance_km):
        return self.ms_per_km * np.asarray(distance_km, dtype=float) + self.base_latency_ms

    def transmission_ms(self, bandwidth_mbps):
        """τ = M / bandwidth (bandwidth in Mbit/s = 10³ bit/ms)."""
        return self.model_bits / (np.asarray(bandwidth_mbps, dtype=float) * 1e3)


@dataclass
class Connectivity:
    """The complete connectivity graph K_N over an underlay (MultigraphFL's connectivity graph).

    Matrices are N×N, indexed by silo id (file order). ``edge_order`` lists every pair (u, v),
    u < v in file order, in the order of u's own Dijkstra discovery of v; ``underlay_edges`` lists
    the underlay's edges in networkx node-major order (what iterating ``graph.edges`` gives).
    ``paths[u][v]`` is the Dijkstra path on distance.
    """

    names: list[str]
    model: DelayModel
    distance: np.ndarray
    hops: np.ndarray
    latency: np.ndarray
    tau: np.ndarray
    compute: np.ndarray
    access: np.ndarray
    edge_order: list[tuple[int, int]]
    underlay_edges: list[tuple[int, int]]
    paths: list[dict[int, list[int]]] = field(repr=False)
    source: str = "<memory>"
    name: str = "network"

    @property
    def n(self) -> int:
        return len(self.names)

    def bandwidth_mbps(self, i: int, j: int) -> float:
        return self.model.core_mbps / max(int(self.hops[i, j]), 1)


def _silo_vectors(topology: Topology, model: DelayModel) -> tuple[np.ndarray, np.ndarray]:
    compute = np.array([model.compute_ms if s.compute_ms is None else s.compute_ms for s in topology.silos])
    access = np.array([model.access_ms(s.access_gbps) for s in topology.silos])
    return compute, access


def node_major_edges(n: int, pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Edge order of an ``nx.Graph`` built by inserting ``pairs`` in order: for each node in id order,
    its not-yet-listed neighbours in adjacency insertion order."""
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs:
        if b not in adj[a]:
            adj[a].append(b)
            adj[b].append(a)
    return [(a, b) for a in range(n) for b in adj[a] if b > a]


def connectivity_graph(topology: Topology, model: DelayModel | None = None) -> Connectivity:
    """Build K_N from an underlay whose edges all carry ``distance_km``.

    Raises TopologyError (naming the file) when an edge has no distance or the underlay is not
    connected.
    """
    model = model or DelayModel()
    src = topology.source
    missing = [f"edges[{k}] ({topology.silos[e.src].name}–{topology.silos[e.dst].name})"
               for k, e in enumerate(topology.edges) if e.distance_km is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f", … ({len(missing)} in all)" if len(missing) > 5 else "")
        raise TopologyError(
            f"{src}: the delay model needs 'distance_km' on every underlay edge; missing on {shown}"
        )
    n = topology.num_silos
    if n < 2:
        raise TopologyError(f"{src}: a network needs at least 2 silos, got {n}")
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for e in topology.edges:
        g.add_edge(e.src, e.dst, distance=float(e.distance_km))
    if not nx.is_connected(g):
        comps = sorted((sorted(c) for c in nx.connected_components(g)), key=len)
        names = ", ".join(topology.silos[i].name for i in comps[0][:5])
        raise TopologyError(
            f"{src}: the network is disconnected ({len(comps)} parts); silo(s) {names} cannot reach "
            "the others — add an edge with a distance_km joining them"
        )
    dist = np.zeros((n, n))
    hops = np.zeros((n, n), dtype=int)
    paths: list[dict[int, list[int]]] = []
    later: list[list[int]] = []
    adj = [[(v, float(a["distance"])) for v, a in g.adj[u].items()] for u in range(n)]
    for u in range(n):
        d, p = _dijkstra(adj, u)
        paths.append(p)
        order = []
        for v, path in p.items():  # insertion order = order Dijkstra first reached v
            dist[u, v] = d[v]
            hops[u, v] = len(path) - 1
            if v > u:
                order.append(v)
        later.append(order)
    edge_order = [(u, v) for u in range(n) for v in later[u]]
    compute, access = _silo_vectors(topology, model)
    latency = model.latency_ms(dist)
    np.fill_diagonal(latency, 0.0)
    tau = model.model_bits * hops / model.core_bits_per_ms
    return Connectivity(
        names=[s.name for s in topology.silos], model=model, distance=dist, hops=hops,
        latency=latency, tau=tau, compute=compute, access=access, edge_order=edge_order,
        underlay_edges=node_major_edges(n, [(e.src, e.dst) for e in topology.edges]),
        paths=paths, source=src, name=topology.name,
    )


def _dijkstra(adj: list[list[tuple[int, float]]], source: int) -> tuple[dict[int, float], dict[int, list[int]]]:
    """Dijkstra as networkx ≤ 3.5 (and 2.4, MultigraphFL's) does it: neighbours in adjacency order,
    a path replaced only by a strictly shorter one, and ``paths`` ordered by first discovery
    (networkx 3.6 reorders it by distance, which would change the edge order)."""
    dist: dict[int, float] = {}
    seen = {source: 0.0}
    paths = {source: [source]}
    c = count()
    fringe = [(0.0, next(c), source)]
    while fringe:
        d, _, v = heapq.heappop(fringe)
        if v in dist:
            continue
        dist[v] = d
        for u, cost in adj[v]:
            vu = d + cost
            if u in dist:
                continue
            if u not in seen or vu < seen[u]:
                seen[u] = vu
                heapq.heappush(fringe, (vu, next(c), u))
                paths[u] = paths[v] + [u]
    return dist, paths


def degrees(n: int, arcs: Iterable[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(out-degree, in-degree) of each node for directed arcs (j, i)."""
    out = np.zeros(n, dtype=int)
    inn = np.zeros(n, dtype=int)
    for j, i in arcs:
        out[j] += 1
        inn[i] += 1
    return out, inn


def overlay_arc_weights(conn: Connectivity, arcs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """w(i→j) = T_c + ℓ(i,j) + max(δ⁺(i)·u, δ⁻(j)·u, τ(i,j)) with degrees of the overlay ``arcs``
    (MultigraphFL's arc delay). T_c is the sender's compute time; u the sender's upload / receiver's download."""
    out, inn = degrees(conn.n, arcs)
    return {
        (i, j): float(conn.compute[i] + conn.latency[i, j]
                      + max(out[i] * conn.access[i], inn[j] * conn.access[j], conn.tau[i, j]))
        for i, j in arcs
    }


def max_cycle_mean(n: int, weighted_arcs: Iterable[tuple[int, int, float]]) -> float:
    """Maximum cycle mean λ = max over directed cycles of (Σw)/(number of arcs), by Karp's algorithm
    run in each strongly connected component (from its smallest node). Self-loops are cycles of
    length 1. Raises ValueError when the graph has no cycle."""
    arcs = list(weighted_arcs)
    if not arcs:
        raise ValueError("max_cycle_mean: the graph has no arcs, hence no cycle")
    comp = _scc_labels(n, [(a, b) for a, b, _ in arcs])
    best = -np.inf
    for c in sorted(set(comp)):
        nodes = [v for v in range(n) if comp[v] == c]
        local = {v: k for k, v in enumerate(nodes)}
        sub = [(local[a], local[b], w) for a, b, w in arcs if comp[a] == c and comp[b] == c]
        if sub:
            best = max(best, _karp(len(nodes), sub))
    if best == -np.inf:
        raise ValueError("max_cycle_mean: the graph has no cycle")
    return float(best)


def _karp(n: int, arcs: list[tuple[int, int, float]]) -> float:
    """Karp on a strongly connected graph: D_k(v) = max weight of a k-arc walk from node 0 to v;
    λ = max_v min_{k<n} (D_n(v) − D_k(v)) / (n − k)."""
    src = np.array([a for a, _, _ in arcs])
    dst = np.array([b for _, b, _ in arcs])
    w = np.array([x for _, _, x in arcs], dtype=float)
    d = np.full((n + 1, n), -np.inf)
    d[0, 0] = 0.0
    for k in range(1, n + 1):
        np.maximum.at(d[k], dst, d[k - 1][src] + w)
    best = -np.inf
    with np.errstate(invalid="ignore"):
        for v in range(n):
            if not np.isfinite(d[n, v]):
                continue
            ks = np.isfinite(d[:n, v])
            ratios = (d[n, v] - d[:n, v][ks]) / (n - np.arange(n)[ks])
            best = max(best, float(ratios.min()))
    return best


def _scc_labels(n: int, arcs: list[tuple[int, int]]) -> list[int]:
    """Strongly connected component label of each node (Kosaraju, iterative)."""
    fwd: list[list[int]] = [[] for _ in range(n)]
    bwd: list[list[int]] = [[] for _ in range(n)]
    for a, b in arcs:
        fwd[a].append(b)
        bwd[b].append(a)
    seen = [False] * n
    order: list[int] = []
    for s in range(n):
        if seen[s]:
            continue
        seen[s] = True
        stack = [(s, iter(fwd[s]))]
        while stack:
            v, it = stack[-1]
            for x in it:
                if not seen[x]:
                    seen[x] = True
                    stack.append((x, iter(fwd[x])))
                    break
            else:
                stack.pop()
                order.append(v)
    label = [-1] * n
    c = 0
    for s in reversed(order):
        if label[s] >= 0:
            continue
        label[s] = c
        stack2 = [s]
        while stack2:
            v = stack2.pop()
            for x in bwd[v]:
                if label[x] < 0:
                    label[x] = c
                    stack2.append(x)
        c += 1
    return label


def tree_cycle_time(weights: dict[tuple[int, int], float]) -> float:
    """λ of a bidirected tree: max over edges of [w(i→j) + w(j→i)] / 2."""
    return max((w + weights[(j, i)]) / 2 for (i, j), w in weights.items())


def overlay_cycle_time(conn: Connectivity, arcs: Sequence[tuple[int, int]]) -> float:
    """λ of an overlay given as directed arcs, with the overlay's own degrees."""
    w = overlay_arc_weights(conn, arcs)
    return max_cycle_mean(conn.n, [(i, j, x) for (i, j), x in w.items()])
