"""Overlay generators and their cycle times, exactly as MultigraphFL builds them (Marfoq et al., NeurIPS 2020; their Table 3).

Every generator takes a :class:`~fedsim.netmodel.model.Connectivity` and returns an
:class:`Overlay`; ``Overlay.to_topology()`` gives a trainable :class:`~fedsim.topology.Topology`
whose edges carry ``latency_ms``/``bandwidth_mbps``/``distance_km`` from the connectivity graph.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from fedsim.errors import TopologyError
from fedsim.netmodel.model import (
    Connectivity,
    _dijkstra,
    max_cycle_mean,
    overlay_arc_weights,
    tree_cycle_time,
)
from fedsim.topology import Edge, Silo, Topology

OVERLAY_KINDS = ("star", "matcha", "matcha+", "mst", "delta-mbst", "ring", "multigraph")
EXTRA_KINDS = ("complete",)
T_MAX = 5
MULTIGRAPH_ROUNDS = 6400
MATCHA_ROUNDS = 1000
MATCHA_BUDGET = 0.5


@dataclass
class Overlay:
    """An overlay on a network: declared edges, whether directed, and its cycle time (ms)."""

    kind: str
    conn: Connectivity = field(repr=False)
    edges: list[tuple[int, int]]
    directed: bool
    cycle_time_ms: float
    edge_attrs: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def arcs(self) -> list[tuple[int, int]]:
        if self.directed:
            return list(self.edges)
        return [a for u, v in self.edges for a in ((u, v), (v, u))]

    def to_topology(self) -> Topology:
        conn = self.conn
        silos = [Silo(i, name) for i, name in enumerate(conn.names)]
        edges = []
        for u, v in self.edges:
            attrs = {
                "latency_ms": float(conn.latency[u, v]),
                "bandwidth_mbps": float(conn.bandwidth_mbps(u, v)),
                "distance_km": float(conn.distance[u, v]),
            }
            attrs.update(self.edge_attrs.get((u, v), {}))
            nums = {k: attrs.pop(k) for k in ("latency_ms", "bandwidth_mbps", "distance_km")}
            edges.append(Edge(u, v, extra=attrs, **nums))
        m = conn.model
        extra = {
            "overlay": self.kind,
            "network": conn.name,
            "cycle_time_ms": float(self.cycle_time_ms),
            "delay_model": {"model_bits": m.model_bits, "compute_ms": m.compute_ms,
                            "access_gbps": m.access_gbps, "core_gbps": m.core_gbps},
            **self.extra,
        }
        return Topology(f"{conn.name}-{self.kind}", silos, edges, self.directed,
                        f"<{self.kind} overlay of {conn.source}>", extra)


def _sym_weights(conn: Connectivity) -> tuple[float, np.ndarray]:
    """(T_c, u-matrix): the model's compute time and max(u_i, u_j) per pair (u is per silo)."""
    u = np.maximum.outer(conn.access, conn.access)
    return conn.model.compute_ms, u


def _bidirected(edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [a for u, v in edges for a in ((u, v), (v, u))]


# ---------------------------------------------------------------------------------------- STAR


def star_server(conn: Connectivity) -> int:
    """Highest load centrality weighted by ℓ, first node on ties (MultigraphFL's STAR)."""
    lat = conn.latency
    n = conn.n
    # When every direct edge is the unique shortest path all loads are 0: skip networkx.
    two_hop = lat[:, :, None] + lat[None, :, :]  # [i, k, j] = ℓ(i,k) + ℓ(k,j)
    idx = np.arange(n)
    two_hop[:, idx, idx] = np.inf
    two_hop[idx, idx, :] = np.inf
    if np.all(lat[~np.eye(n, dtype=bool)] < two_hop.min(axis=1)[~np.eye(n, dtype=bool)]):
        return 0

    g = nx.Graph()
    g.add_nodes_from(range(n))
    for u, v in conn.edge_order:
        g.add_edge(u, v, latency=float(lat[u, v]))
    load = nx.load_centrality(g, weight="latency")
    best = max(load.values())
    return min(v for v, x in load.items() if x == best)


def star_overlay(conn: Connectivity) -> Overlay:
    """Server s; each client joins along the Dijkstra path on T_c+ℓ+τ; the star edge sums ℓ along
    the path and keeps the last hop's τ. Reported value 2(λ − T_c) + T_c."""
    n = conn.n
    s = star_server(conn)
    tc = conn.model.compute_ms
    adj: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for u, v in conn.edge_order:  # nx.Graph adjacency order of the connectivity graph
        w = float(tc + conn.latency[u, v] + conn.tau[u, v])
        adj[u].append((v, w))
        adj[v].append((u, w))
    _, paths = _dijkstra(adj, s)
    edges, attrs = [], {}
    lat_e, tau_e = {}, {}
    for i in range(n):
        if i == s:
            continue
        path = paths[i]
        hops = list(zip(path[:-1], path[1:], strict=True))
        a, b = hops[-1]
        lat_e[i] = float(sum(conn.latency[x, y] for x, y in hops))
        tau_e[i] = float(conn.tau[a, b])
        key = (s, i)
        edges.append(key)
        attrs[key] = {
            "latency_ms": lat_e[i],
            "bandwidth_mbps": conn.model.core_mbps / max(int(conn.hops[a, b]), 1),
            "distance_km": float(sum(conn.distance[x, y] for x, y in hops)),
        }
        if len(hops) > 1:
            attrs[key]["path"] = [int(x) for x in path]
    # λ of the bidirected star with δ(s) = N−1, δ(i) = 1, then the STAR rule.
    ds = n - 1
    lam = max(
        (conn.compute[s] + lat_e[i] + max(ds * conn.access[s], conn.access[i], tau_e[i])
         + conn.compute[i] + lat_e[i] + max(conn.access[i], ds * conn.access[s], tau_e[i])) / 2
        for i in lat_e
    )
    value = 2 * (lam - conn.compute[s]) + conn.compute[s]
    return Overlay("star", conn, edges, False, float(value), attrs,
                   {"server": s, "cycle_time_rule": "2*(lambda - compute) + compute"})


# ----------------------------------------------------------------------------------------- MST


def kruskal(n: int, order: list[tuple[int, int]], weight: np.ndarray) -> list[tuple[int, int]]:
    """Kruskal with a stable sort: ties keep ``order``."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    tree = []
    for u, v in sorted(order, key=lambda e: weight[e[0], e[1]]):
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[ru] = rv
            tree.append((u, v))
            if len(tree) == n - 1:
                break
    return tree


def tree_lambda(conn: Connectivity, edges: list[tuple[int, int]]) -> float:
    return tree_cycle_time(overlay_arc_weights(conn, _bidirected(edges)))


def mst_overlay(conn: Connectivity) -> Overlay:
    tc, _ = _sym_weights(conn)
    w = tc + conn.latency + conn.tau
    edges = kruskal(conn.n, conn.edge_order, w)
    return Overlay("mst", conn, edges, False, tree_lambda(conn, edges))


# ----------------------------------------------------------------------------------- δ-MBST


def _cube_path(n: int, tree: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A Hamiltonian path of the tree's cube: vertices at even depth in preorder, odd depth in
    postorder (consecutive vertices are at most 3 tree hops apart). Deterministic."""
    adj: list[list[int]] = [[] for _ in range(n)]
    for u, v in tree:
        adj[u].append(v)
        adj[v].append(u)
    order: list[int] = []
    stack = [(0, -1, 0, False)]
    while stack:
        v, parent, depth, done = stack.pop()
        if done:
            order.append(v)
            continue
        if depth % 2 == 0:
            order.append(v)
        else:
            stack.append((v, parent, depth, True))
        for x in sorted(adj[v], reverse=True):
            if x != parent:
                stack.append((x, v, depth + 1, False))
    return list(zip(order[:-1], order[1:], strict=True))


def _delta_prim(omega: np.ndarray, delta: int) -> list[tuple[int, int]]:
    """Prim from node 0 restricted to tree nodes of degree < δ; first minimum in a row-major scan
    (rows: tree nodes in the order added, columns: node order)."""
    n = omega.shape[0]
    order = [0]
    in_tree = np.zeros(n, dtype=bool)
    in_tree[0] = True
    deg = np.zeros(n, dtype=int)
    edges = []
    for _ in range(n - 1):
        rows = np.array(order)
        sub = omega[rows].copy()
        sub[:, in_tree] = np.inf
        sub[deg[rows] >= delta, :] = np.inf
        k = int(np.argmin(sub))
        r, c = rows[k // n], k % n
        if not np.isfinite(sub.flat[k]):
            raise TopologyError("δ-Prim found no edge to extend the tree")
        edges.append((int(r), int(c)))
        deg[r] += 1
        deg[c] += 1
        in_tree[c] = True
        order.append(int(c))
    return edges


def delta_mbst_overlay(conn: Connectivity) -> Overlay:
    tc, u = _sym_weights(conn)
    omega = tc + conn.latency + 2 * np.maximum(u, conn.tau)
    np.fill_diagonal(omega, np.inf)
    candidates = [("cube", _cube_path(conn.n, kruskal(conn.n, conn.edge_order, omega)))]
    candidates += [(f"delta-prim-{d}", _delta_prim(omega, d)) for d in range(2, conn.n)]
    best_name, best_edges, best = "", [], math.inf
    for name, edges in candidates:
        lam = tree_lambda(conn, edges)
        if lam < best:
            best_name, best_edges, best = name, edges, lam
    degs = np.bincount(np.array(best_edges).ravel(), minlength=conn.n)
    return Overlay("delta-mbst", conn, best_edges, False, best,
                   extra={"construction": best_name, "max_degree": int(degs.max())})


# ----------------------------------------------------------------------------------------- RING


def ring_weights(conn: Connectivity) -> np.ndarray:
    tc, u = _sym_weights(conn)
    w = tc + conn.latency + np.maximum(u, conn.tau)
    np.fill_diagonal(w, 0.0)
    return w


def christofides_tour(w: np.ndarray) -> list[int]:
    """MultigraphFL's RING, steps 1–3: Prim from 0, min-weight perfect matching of odd vertices
    (networkx), Euler tour by Hierholzer with the specified neighbour order, shortcut."""
    n = w.shape[0]
    if n == 2:
        return [0, 1]
    # 1. Prim
    order = [0]
    visited = np.zeros(n, dtype=bool)
    visited[0] = True
    tree = []
    for _ in range(n - 1):
        rows = np.array(order)
        sub = w[rows].copy()
        sub[:, visited] = np.inf
        k = int(np.argmin(sub))
        r, c = int(rows[k // n]), k % n
        tree.append((min(r, c), max(r, c)))
        visited[c] = True
        order.append(c)
    deg = np.zeros(n, dtype=int)
    for a, b in tree:
        deg[a] += 1
        deg[b] += 1
    # 2. matching
    odd = [v for v in range(n) if deg[v] % 2]
    g = nx.Graph()
    g.add_nodes_from(odd)
    for x in range(len(odd)):
        for y in range(x + 1, len(odd)):
            g.add_edge(odd[x], odd[y], weight=-float(w[odd[x], odd[y]]))
    matching = sorted((min(a, b), max(a, b)) for a, b in nx.max_weight_matching(g, maxcardinality=True))
    # 3. Euler tour on tree + matching edges
    all_edges = [(a, b, "t") for a, b in tree] + [(a, b, "m") for a, b in matching]
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for x in range(n):
        smaller = sorted((a if b == x else b, eid) for eid, (a, b, _) in enumerate(all_edges)
                         if x in (a, b) and min(a, b) < x)
        tree_larger = sorted((b, eid) for eid, (a, b, k) in enumerate(all_edges) if k == "t" and a == x)
        match_larger = [(b, eid) for eid, (a, b, k) in enumerate(all_edges) if k == "m" and a == x]
        adj[x] = smaller + tree_larger + match_larger
    used = [False] * len(all_edges)
    ptr = [0] * n
    stack, popped = [0], []
    while stack:
        v = stack[-1]
        while ptr[v] < len(adj[v]) and used[adj[v][ptr[v]][1]]:
            ptr[v] += 1
        if ptr[v] < len(adj[v]):
            far, eid = adj[v][ptr[v]]
            used[eid] = True
            stack.append(far)
        else:
            popped.append(stack.pop())
    return list(dict.fromkeys(popped))


def ring_overlay(conn: Connectivity) -> Overlay:
    tour = christofides_tour(ring_weights(conn))
    edges = [(tour[k], tour[(k + 1) % len(tour)]) for k in range(len(tour))]
    if len(tour) == 2:
        edges = [(tour[0], tour[1]), (tour[1], tour[0])]
    w = overlay_arc_weights(conn, edges)
    lam = max_cycle_mean(conn.n, [(i, j, x) for (i, j), x in w.items()])
    return Overlay("ring", conn, edges, True, lam, extra={"tour": [int(t) for t in tour]})


# ----------------------------------------------------------------------------------- MULTIGRAPH


def multigraph_parallel_edges(weights: list[float], t_max: int = T_MAX) -> list[int]:
    lo = min(weights)
    return [min(t_max, round(x / lo)) for x in weights]


def multigraph_cycle_time(weights: list[float], parallel: list[int], compute_ms: float,
                          rounds: int = MULTIGRAPH_ROUNDS) -> float:
    """The multigraph state recursion on a ring (MultigraphFL's MULTIGRAPH): mean of λ_k over rounds,
    λ_k = Σ_strong τ_e / N (the ring's only cycle, weak arcs set to 0)."""
    w = np.asarray(weights, dtype=float)
    ne = np.asarray(parallel)
    n = len(w)
    states = math.lcm(*parallel)
    tau = w.copy()
    prev_strong = np.ones(n, dtype=bool)
    total = 0.0
    for k in range(rounds):
        strong = (k % states) % ne == 0
        if k > 0:
            s_keep = strong & prev_strong
            s_back = strong & ~prev_strong
            tau[s_keep] = w[s_keep]
            tau[s_back] = np.maximum(compute_ms, w[s_back] - tau[s_back])
        lam = tau[strong].sum() / n
        total += lam
        weak = ~strong
        tau[weak & prev_strong] = lam
        tau[weak & ~prev_strong] = lam + tau[weak & ~prev_strong]
        prev_strong = strong
    return total / rounds


def multigraph_overlay(conn: Connectivity, t_max: int = T_MAX, rounds: int = MULTIGRAPH_ROUNDS,
                       ring: Overlay | None = None) -> Overlay:
    ring = ring or ring_overlay(conn)
    w = overlay_arc_weights(conn, ring.edges)
    weights = [w[e] for e in ring.edges]
    parallel = multigraph_parallel_edges(weights, t_max)
    value = multigraph_cycle_time(weights, parallel, conn.model.compute_ms, rounds)
    attrs = {e: {"parallel": int(p)} for e, p in zip(ring.edges, parallel, strict=True)}
    return Overlay("multigraph", conn, list(ring.edges), True, value, attrs,
                   {"t_max": t_max, "multigraph_states": math.lcm(*parallel)})


def multigraph_active_arcs(topology: Topology, round: int) -> set[tuple[int, int]]:
    """Strong arcs (j, i) of the multigraph state used in ``round`` (state = round mod S, arc e
    strong when state mod n_e = 0). Edges without ``parallel`` count as n_e = 1 (always strong)."""
    arcs = set()
    for e in topology.edges:
        ne = int(e.extra.get("parallel", 1))
        if round % ne == 0:  # n_e divides S, so (round mod S) mod n_e = round mod n_e
            arcs.add((e.src, e.dst))
            if not topology.directed:
                arcs.add((e.dst, e.src))
    return arcs


# ---------------------------------------------------------------------------------------- MATCHA


def misra_gries(n: int, edges: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Edge colouring with colours 0…Δ, the Misra–Gries variant MultigraphFL's MATCHA uses.
    ``edges`` in edge order; returns colour per edge keyed (min, max)."""
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:  # smaller-index neighbours come first (node-major edge order)
        nbrs[v].append(u)
    larger: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        larger[u].append(v)
    for x in range(n):
        nbrs[x] = sorted(nbrs[x]) + larger[x]
    delta = max(len(a) for a in nbrs)
    colour: dict[tuple[int, int], int] = {}
    at: list[dict[int, list[int]]] = [{} for _ in range(n)]  # at[x][c] = neighbours via colour c

    def key(a: int, b: int) -> tuple[int, int]:
        return (a, b) if a < b else (b, a)

    def set_colour(a: int, b: int, c: int | None) -> None:
        k = key(a, b)
        old = colour.pop(k, None)
        if old is not None:
            at[a][old].remove(b)
            at[b][old].remove(a)
            if not at[a][old]:
                del at[a][old]
            if not at[b][old]:
                del at[b][old]
        if c is not None:
            colour[k] = c
            at[a].setdefault(c, []).append(b)
            at[b].setdefault(c, []).append(a)

    def smallest_free(x: int) -> int:
        for c in range(delta + 1):
            if c not in at[x]:
                return c
        raise TopologyError("edge colouring ran out of colours")

    for u, v in edges:
        if key(u, v) in colour:
            continue
        fan = [v]
        in_fan = {v}
        while True:
            last = fan[-1]
            for x in nbrs[u]:
                if x not in in_fan:
                    cx = colour.get(key(u, x))
                    if cx is not None and cx not in at[last]:
                        fan.append(x)
                        in_fan.add(x)
                        break
            else:
                break
        c = smallest_free(u)
        d = smallest_free(fan[-1])
        path, path_edges, seen = [u], [], set()
        cur, col = u, d
        while True:
            cand = at[cur].get(col, [])
            nxt = None
            if len(cand) == 1:
                nxt = cand[0]
            elif cand:
                nxt = next(y for y in nbrs[cur] if y in cand)
            if nxt is None or key(cur, nxt) in seen:
                break
            seen.add(key(cur, nxt))
            path_edges.append((cur, nxt, col))
            path.append(nxt)
            cur, col = nxt, (c if col == d else d)
        sub = fan
        for idx, x in enumerate(fan):
            if colour.get(key(u, x)) == d:
                sub = fan[:idx]
                break
        if not sub or sub[-1] in set(path):
            sub = fan
        for a, b, _ in path_edges:
            set_colour(a, b, None)
        for a, b, cc in path_edges:
            set_colour(a, b, c if cc == d else d)
        for i in range(len(sub) - 1):
            set_colour(u, sub[i], colour[key(u, sub[i + 1])])
        set_colour(u, sub[-1], d)
    return colour


def matcha_probabilities(n: int, matchings: list[list[tuple[int, int]]], budget: float = MATCHA_BUDGET) -> np.ndarray:
    """argmax_p λ₂(Σ p_j L_j) s.t. 0 ≤ p ≤ 1, Σp ≤ budget·(number of matchings), as the SDP
    γI − β11ᵀ ≼ Σ p_j L_j; clipped to [0, 1] and rounded to 1e-6 (removes solver noise around ½,
    which otherwise changes numpy's binomial draws)."""
    import cvxpy as cp

    m = len(matchings)
    lap = np.zeros((m, n, n))
    for j, mt in enumerate(matchings):
        for a, b in mt:
            lap[j, a, a] += 1
            lap[j, b, b] += 1
            lap[j, a, b] -= 1
            lap[j, b, a] -= 1
    p = cp.Variable(m)
    gamma = cp.Variable()
    beta = cp.Variable()
    total = cp.reshape(lap.reshape(m, n * n).T @ p, (n, n), order="C")
    lmi = total - gamma * np.eye(n) + beta * np.ones((n, n))
    cons = [p >= 0, p <= 1, cp.sum(p) <= budget * m, (lmi + lmi.T) / 2 >> 0]
    prob = cp.Problem(cp.Maximize(gamma), cons)
    for solver in ("CLARABEL", "SCS"):
        try:
            prob.solve(solver=solver)
        except (cp.error.SolverError, Exception):  # noqa: BLE001 - try the next solver
            continue
        if p.value is not None:
            break
    if p.value is None:
        raise TopologyError("MATCHA: the SDP for the activation probabilities could not be solved")
    return np.round(np.clip(np.asarray(p.value, dtype=float), 0.0, 1.0), 6)


def matcha_cycle_time(conn: Connectivity, edges: list[tuple[int, int]], colours: np.ndarray,
                      probs: np.ndarray, rounds: int = MATCHA_ROUNDS, seed: int = 0) -> float:
    """Mean round time: each round draws B ~ Bernoulli(p) (one vector call, redrawn while all zero);
    the round time is the largest arc delay over the active edges, δ = active degree."""
    rng = np.random.RandomState(seed)
    a = np.array([e[0] for e in edges])
    b = np.array([e[1] for e in edges])
    lat = conn.latency[a, b]
    tau = conn.tau[a, b]
    tc = conn.model.compute_ms
    total = 0.0
    for _ in range(rounds):
        draw = rng.binomial(1, probs)
        while not draw.any():
            draw = rng.binomial(1, probs)
        active = draw[colours].astype(bool)
        deg = np.bincount(a[active], minlength=conn.n) + np.bincount(b[active], minlength=conn.n)
        aa, bb = a[active], b[active]
        w = tc + lat[active] + np.maximum(np.maximum(deg[aa] * conn.access[aa], deg[bb] * conn.access[bb]),
                                          tau[active])
        total += float(w.max())
    return total / (rounds - 1)


def matcha_overlay(conn: Connectivity, plus: bool = False, rounds: int = MATCHA_ROUNDS, seed: int = 0) -> Overlay:
    edges = list(conn.edge_order if plus else conn.underlay_edges)
    colour = misra_gries(conn.n, edges)
    ncol = max(colour.values()) + 1
    deg = np.bincount(np.array(edges).ravel(), minlength=conn.n)
    ncol = max(ncol, int(deg.max()) + 1)
    matchings: list[list[tuple[int, int]]] = [[] for _ in range(ncol)]
    for e in edges:
        matchings[colour[(min(e), max(e))]].append(e)
    probs = matcha_probabilities(conn.n, matchings)
    colours = np.array([colour[(min(e), max(e))] for e in edges])
    value = matcha_cycle_time(conn, edges, colours, probs, rounds, seed)
    kept = [e for e in edges if probs[colour[(min(e), max(e))]] > 0]
    attrs = {e: {"matching": int(colour[(min(e), max(e))])} for e in kept}
    kind = "matcha+" if plus else "matcha"
    return Overlay(kind, conn, kept, False, value, attrs,
                   {"matching_probabilities": [float(x) for x in probs]})


def matcha_active_arcs(topology: Topology, round: int, seed: int = 0) -> set[tuple[int, int]]:
    """Arcs active in ``round`` of a MATCHA overlay topology: matchings drawn with the stored
    probabilities (seeded by (seed, round), redrawn while none is active); both directions."""
    probs = np.asarray(topology.extra.get("matching_probabilities", []), dtype=float)
    if probs.size == 0:
        return set(topology.arcs)
    rng = np.random.RandomState([seed, round])
    draw = rng.binomial(1, probs)
    while not draw.any():
        draw = rng.binomial(1, probs)
    arcs = set()
    for e in topology.edges:
        if draw[int(e.extra.get("matching", 0))]:
            arcs.update({(e.src, e.dst), (e.dst, e.src)})
    return arcs


# ------------------------------------------------------------------------------------- COMPLETE


def complete_overlay(conn: Connectivity) -> Overlay:
    edges = list(conn.edge_order)
    w = overlay_arc_weights(conn, _bidirected(edges))
    lam = max_cycle_mean(conn.n, [(i, j, x) for (i, j), x in w.items()])
    return Overlay("complete", conn, edges, False, lam)


BUILDERS: dict[str, Callable[[Connectivity], Overlay]] = {
    "star": star_overlay,
    "matcha": matcha_overlay,
    "matcha+": lambda conn: matcha_overlay(conn, plus=True),
    "mst": mst_overlay,
    "delta-mbst": delta_mbst_overlay,
    "ring": ring_overlay,
    "multigraph": multigraph_overlay,
    "complete": complete_overlay,
}


def build_overlay(conn: Connectivity, kind: str) -> Overlay:
    if kind not in BUILDERS:
        raise TopologyError(
            f"unknown overlay {kind!r}; choose one of {', '.join((*OVERLAY_KINDS, *EXTRA_KINDS))}"
        )
    return BUILDERS[kind](conn)


def build_overlays(conn: Connectivity, kinds: list[str] | tuple[str, ...] = OVERLAY_KINDS,
                   timings: dict[str, float] | None = None) -> dict[str, Overlay]:
    """Build several overlays (the ring is computed once and reused by the multigraph)."""
    out: dict[str, Overlay] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        if kind == "multigraph" and "ring" in out:
            out[kind] = multigraph_overlay(conn, ring=out["ring"])
        else:
            out[kind] = build_overlay(conn, kind)
        if timings is not None:
            timings[kind] = time.perf_counter() - t0
    return out
