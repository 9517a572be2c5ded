"""The overlays (``overlays.py``): MultigraphFL's Table 3 rows (Marfoq et al., NeurIPS 2020), every
overlay a valid topology, MATCHA+ equal to MATCHA on a complete underlay, the multigraph's
active arcs."""

from __future__ import annotations

import math

import networkx as nx
import pytest

from fedsim.netmodel import multigraph_active_arcs
from fedsim.topology import load_topology
from tests.harness import REPO

TOPOLOGIES = REPO / "topologies"

# MultigraphFL Table 3 (FEMNIST constants), ms (Marfoq et al., NeurIPS 2020).
TABLE3 = {
    "gaia": {"star": 289.8, "matcha": 166.4, "matcha+": 166.4, "mst": 77.2, "delta-mbst": 77.2,
             "ring": 57.2, "multigraph": 15.7},
    "aws_na": {"star": 98.8, "matcha": 57.7, "matcha+": 57.7, "mst": 28.7, "delta-mbst": 28.7,
               "ring": 20.3, "multigraph": 13.6},
}


def test_matcha_plus_equals_matcha_on_complete_gaia(networks):
    _, overlays = networks["gaia"]
    assert overlays["matcha"].extra["matching_probabilities"] == [0.5] * 11
    assert overlays["matcha+"].cycle_time_ms == pytest.approx(overlays["matcha"].cycle_time_ms)
    assert overlays["matcha"].cycle_time_ms == pytest.approx(166.39, abs=0.01)


@pytest.mark.parametrize("network", sorted(TABLE3))
def test_table3_rows(networks, network):
    _, overlays = networks[network]
    for kind, expected in TABLE3[network].items():
        tol = 0.02 if kind.startswith("matcha") else 0.01
        got = overlays[kind].cycle_time_ms
        assert got == pytest.approx(expected, rel=tol), f"{network} {kind}: {got:.2f} vs {expected}"


# ------------------------------------------------------------------------------ overlays


def _undirected_degrees(topo):
    deg = [0] * topo.num_silos
    for e in topo.edges:
        deg[e.src] += 1
        deg[e.dst] += 1
    return deg


@pytest.mark.parametrize("network", sorted(TABLE3))
def test_overlays_are_valid_topologies(networks, network, tmp_path):
    conn, overlays = networks[network]
    n = conn.n
    for kind, o in overlays.items():
        topo = o.to_topology()
        path = topo.save(tmp_path / f"{kind}.yaml")
        back = load_topology(path, require_strongly_connected=True)
        assert back.num_silos == n and len(back.edges) == len(topo.edges)
        assert [s.name for s in back.silos] == conn.names
        assert all(e.latency_ms is not None and e.bandwidth_mbps is not None for e in back.edges)
        assert back.extra["overlay"] == kind
        deg = _undirected_degrees(back)
        if kind == "star":
            hub = o.extra["server"]
            assert hub == 0 and deg[hub] == n - 1 and sorted(deg)[:-1] == [1] * (n - 1)
        if kind in ("mst", "delta-mbst", "star"):
            assert len(back.edges) == n - 1 and not back.directed
            assert nx.is_tree(back.to_networkx())
        if kind == "delta-mbst":
            assert max(deg) == o.extra["max_degree"]
        if kind in ("ring", "multigraph"):
            assert back.directed and deg == [2] * n
            assert all(back.in_degree(i) == 1 and back.out_degree(i) == 1 for i in range(n))
            assert len(o.extra.get("tour", range(n))) == n
        if kind == "multigraph":
            assert back.extra["t_max"] == 5
            par = [e.extra["parallel"] for e in back.edges]
            assert min(par) == 1 and max(par) <= 5
            assert back.extra["multigraph_states"] == math.lcm(*par)
        if kind.startswith("matcha"):
            assert nx.is_connected(back.to_networkx())
            assert len(back.extra["matching_probabilities"]) >= max(deg) + 1


def test_multigraph_active_arcs(networks):
    conn, overlays = networks["gaia"]
    topo = overlays["multigraph"].to_topology()
    par = {(e.src, e.dst): e.extra["parallel"] for e in topo.edges}
    assert multigraph_active_arcs(topo, 0) == set(par)
    assert multigraph_active_arcs(topo, 60) == set(par)
    for k in (1, 2, 3, 7):
        assert multigraph_active_arcs(topo, k) == {a for a, p in par.items() if k % p == 0}
