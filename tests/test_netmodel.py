"""Delay model, Karp, overlays, Table 3 rows, the simulated clock and the cycle-time CLI."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from fedsim.cli import main
from fedsim.errors import TopologyError
from fedsim.netmodel import (
    DelayModel,
    SimClock,
    arc_delays,
    build_overlays,
    connectivity_graph,
    max_cycle_mean,
    multigraph_active_arcs,
    overlay_arc_weights,
    tree_cycle_time,
)
from fedsim.topology import load_topology, make_topology, parse_topology

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGIES = ROOT / "topologies"

# MultigraphFL Table 3 (FEMNIST constants), ms (Marfoq et al., NeurIPS 2020).
TABLE3 = {
    "gaia": {"star": 289.8, "matcha": 166.4, "matcha+": 166.4, "mst": 77.2, "delta-mbst": 77.2,
             "ring": 57.2, "multigraph": 15.7},
    "aws_na": {"star": 98.8, "matcha": 57.7, "matcha+": 57.7, "mst": 28.7, "delta-mbst": 28.7,
               "ring": 20.3, "multigraph": 13.6},
}


@pytest.fixture(scope="module")
def networks():
    out = {}
    for name in TABLE3:
        conn = connectivity_graph(load_topology(TOPOLOGIES / f"{name}.yaml"))
        out[name] = (conn, build_overlays(conn))
    return out


# ------------------------------------------------------------------------------------ Karp


def test_karp_directed_ring():
    assert max_cycle_mean(3, [(0, 1, 1.0), (1, 2, 2.0), (2, 0, 6.0)]) == pytest.approx(3.0)


def test_karp_bidirected_tree():
    # path 0 - 1 - 2 with asymmetric weights: the 2-cycles have means 2.5 and 6
    arcs = [(0, 1, 1.0), (1, 0, 4.0), (1, 2, 5.0), (2, 1, 7.0)]
    assert max_cycle_mean(3, arcs) == pytest.approx(6.0)
    assert tree_cycle_time({(i, j): w for i, j, w in arcs}) == pytest.approx(6.0)


def test_karp_two_cycles_different_means():
    # cycle A: 0→1→0 mean 2; cycle B: 0→2→3→0 mean 5; both share node 0
    arcs = [(0, 1, 1.0), (1, 0, 3.0), (0, 2, 4.0), (2, 3, 5.0), (3, 0, 6.0)]
    assert max_cycle_mean(4, arcs) == pytest.approx(5.0)
    # raising A above B flips the answer
    arcs[1] = (1, 0, 13.0)
    assert max_cycle_mean(4, arcs) == pytest.approx(7.0)


def test_karp_not_strongly_connected_and_self_loop():
    # two separate cycles (means 1 and 10) joined one way, plus a self-loop of 4 on node 4
    arcs = [(0, 1, 1.0), (1, 0, 1.0), (1, 2, 100.0), (2, 3, 10.0), (3, 2, 10.0), (4, 4, 4.0), (3, 4, 0.0)]
    assert max_cycle_mean(5, arcs) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        max_cycle_mean(3, [(0, 1, 1.0), (1, 2, 1.0)])


def test_karp_matches_brute_force_on_random_graphs():
    rng = random.Random(1)
    for _ in range(40):
        n = rng.randint(2, 7)
        g = nx.gnp_random_graph(n, 0.5, seed=rng.randint(0, 10**6), directed=True)
        arcs = [(u, v, rng.uniform(0, 10)) for u, v in g.edges]
        w = {(u, v): x for u, v, x in arcs}
        cycles = list(nx.simple_cycles(g))
        if not cycles:
            continue
        brute = max(sum(w[(c[k], c[(k + 1) % len(c)])] for k in range(len(c))) / len(c) for c in cycles)
        assert max_cycle_mean(n, arcs) == pytest.approx(brute)


# --------------------------------------------------------------------------- delay model


def test_connectivity_constants_gaia():
    conn = connectivity_graph(load_topology(TOPOLOGIES / "gaia.yaml"))
    assert conn.model.access_ms() == pytest.approx(0.4843243)
    assert conn.tau[0, 1] == pytest.approx(4.843243)
    d = 3560.859824767453  # Virginia–California
    assert conn.latency[0, 1] == pytest.approx(0.0085 * d + 4)
    # Gaia's underlay is complete: Virginia's Dijkstra reaches its partners in adjacency order
    assert conn.edge_order[:10] == [(0, k) for k in range(1, 11)]


def test_dijkstra_order_is_first_discovery_not_distance():
    from fedsim.netmodel.model import _dijkstra

    adj = [[(1, 10.0), (2, 1.0)], [(0, 10.0), (2, 1.0)], [(0, 1.0), (1, 1.0)]]
    dist, paths = _dijkstra(adj, 0)
    assert list(paths) == [0, 1, 2] and list(dist) == [0, 2, 1]
    assert paths[1] == [0, 2, 1] and dist[1] == 2.0
    # equal-length paths: the first one found is kept (strict improvement only)
    adj = [[(1, 1.0), (2, 1.0)], [(0, 1.0), (3, 1.0)], [(0, 1.0), (3, 1.0)], [(1, 1.0), (2, 1.0)]]
    assert _dijkstra(adj, 0)[1][3] == [0, 1, 3]


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


def test_tree_formula_equals_karp(networks):
    conn, overlays = networks["aws_na"]
    for kind in ("mst", "delta-mbst"):
        o = overlays[kind]
        w = overlay_arc_weights(conn, o.arcs)
        assert tree_cycle_time(w) == pytest.approx(max_cycle_mean(conn.n, [(i, j, x) for (i, j), x in w.items()]))


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


# ----------------------------------------------------------------------------- sim clock


def test_clock_ring_equal_delays_advances_k_d():
    topo = make_topology("ring", 6)
    d = 12.5
    clock = SimClock(topo, DelayModel(compute_ms=3.0), delays={a: d for a in topo.arcs})
    for k in range(1, 21):
        times = clock.step()
        assert np.all(times == k * d)
    assert clock.now_ms == 20 * d


@pytest.mark.parametrize("kind", ["ring", "mst"])
def test_clock_growth_equals_cycle_time(networks, kind):
    conn, overlays = networks["gaia"]
    o = overlays[kind]
    topo = o.to_topology()
    # the topology's own arc delays reproduce the overlay's arc weights
    w = overlay_arc_weights(conn, o.arcs)
    got = arc_delays(topo)
    assert set(got) == set(w) and all(got[a] == pytest.approx(w[a]) for a in w)
    rounds = 2000
    clock = SimClock(topo)
    clock.run(rounds)
    assert clock.now_ms / rounds == pytest.approx(o.cycle_time_ms, rel=0.01)


def test_clock_round_trip_two_silos():
    topo = parse_topology({"silos": 2, "directed": False,
                           "edges": [{"src": 0, "dst": 1, "latency_ms": 10.0, "bandwidth_mbps": 1000.0}]})
    m = DelayModel()
    d = arc_delays(topo, m)[(0, 1)]
    assert d == pytest.approx(m.compute_ms + 10.0 + m.model_bits / 1e6)
    clock = SimClock(topo, m, round_trip=True)
    clock.run(10)
    assert clock.now_ms == pytest.approx(10 * 2 * d)
    one_way = SimClock(topo, m)
    one_way.run(10)
    assert one_way.now_ms == pytest.approx(10 * d)


def test_clock_multigraph_skips_weak_arcs(networks):
    _, overlays = networks["gaia"]
    topo = overlays["multigraph"].to_topology()
    full = SimClock(topo)
    for _ in range(120):
        full.step(active_arcs=set(topo.arcs))
    multi = SimClock(topo)
    multi.run(120)
    assert multi.now_ms < full.now_ms


def test_arc_delay_sources():
    m = DelayModel()
    # defaults: 4 ms latency, one 1 Gbit/s hop
    ring = make_topology("ring", 4)
    d = arc_delays(ring, m)
    assert d[(0, 1)] == pytest.approx(m.compute_ms + 4.0 + max(m.access_ms(), m.model_bits / 1e6))
    # an underlay with distances: shortest paths of the connectivity graph
    gaia = load_topology(TOPOLOGIES / "gaia.yaml")
    conn = connectivity_graph(gaia, m)
    d = arc_delays(gaia, m)
    expect = m.compute_ms + conn.latency[0, 7] + max(10 * m.access_ms(), conn.tau[0, 7])
    assert d[(0, 7)] == pytest.approx(expect)
    # per-silo compute time overrides the model's
    topo = parse_topology({"silos": [{"name": "a", "compute_ms": 50.0}, {"name": "b"}], "directed": False,
                           "edges": [[0, 1]]})
    d = arc_delays(topo, m)
    assert d[(0, 1)] - d[(1, 0)] == pytest.approx(50.0 - m.compute_ms)


# -------------------------------------------------------------------------- errors & CLI


def _run(argv):
    """``fedsim topology ARGV`` through the real command line (errors: one line, exit 2)."""
    return main(["topology", *argv])


def _write(tmp_path, name, edges, silos=4):
    path = tmp_path / name
    import yaml

    path.write_text(yaml.safe_dump({"name": "bad", "silos": silos, "directed": False, "edges": edges}))
    return path


def test_disconnected_network_fails(tmp_path, capsys):
    path = _write(tmp_path, "split.yaml", [{"src": 0, "dst": 1, "distance_km": 10.0},
                                           {"src": 2, "dst": 3, "distance_km": 20.0}])
    with pytest.raises(TopologyError, match="disconnected"):
        connectivity_graph(load_topology(path))
    assert _run(["cycle-time", str(path)]) == 2
    err = capsys.readouterr().err
    assert "split.yaml" in err and "disconnected" in err
    # a silo with no edge at all
    lone = _write(tmp_path, "lone.yaml", [{"src": 0, "dst": 1, "distance_km": 1.0},
                                          {"src": 1, "dst": 2, "distance_km": 1.0}])
    assert _run(["cycle-time", str(lone)]) == 2
    assert "lone.yaml" in capsys.readouterr().err


def test_missing_distance_fails(tmp_path, capsys):
    path = _write(tmp_path, "nodist.yaml", [{"src": 0, "dst": 1, "distance_km": 10.0}, [1, 2],
                                            {"src": 2, "dst": 3, "distance_km": 5.0}])
    with pytest.raises(TopologyError, match="distance_km"):
        connectivity_graph(load_topology(path))
    assert _run(["overlay", str(path), "ring"]) == 2
    err = capsys.readouterr().err
    assert "nodist.yaml" in err and "distance_km" in err
    gml = tmp_path / "nodist.gml"
    gml.write_text('graph [\n node [ id 0 label "a" ]\n node [ id 1 label "b" ]\n'
                   " edge [ source 0 target 1 ]\n]\n")
    assert _run(["cycle-time", str(gml)]) == 2
    assert "distance" in capsys.readouterr().err


def test_cli_cycle_time_csv_and_overlay(tmp_path, capsys):
    csv = tmp_path / "out" / "gaia.csv"
    assert _run(["cycle-time", str(TOPOLOGIES / "gaia.yaml"), "--csv", str(csv),
                 "--overlays", "star,mst,ring,multigraph"]) == 0
    lines = csv.read_text().splitlines()
    assert lines[0] == "overlay,cycle_time_ms"
    rows = dict(line.split(",") for line in lines[1:])
    assert list(rows) == ["star", "mst", "ring", "multigraph"]
    assert float(rows["ring"]) == pytest.approx(57.2, rel=0.01)
    assert "multigraph" in capsys.readouterr().out
    assert _run(["cycle-time", str(TOPOLOGIES / "gaia.yaml"), "--overlays", "ring,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    out = tmp_path / "ring.yaml"
    assert _run(["overlay", str(TOPOLOGIES / "aws_na.yaml"), "ring", "-o", str(out),
                 "--model-bits", "1e6", "--compute-ms", "2", "--access-gbps", "1"]) == 0
    topo = load_topology(out, require_strongly_connected=True)
    assert topo.directed and topo.extra["delay_model"]["model_bits"] == 1e6
    assert _run(["overlay", str(TOPOLOGIES / "gaia.yaml"), "hexagon"]) == 2


def test_all_pairs_lookups_are_consistent():
    conn = connectivity_graph(load_topology(TOPOLOGIES / "geant.yaml"))
    assert np.allclose(conn.distance, conn.distance.T)
    assert sorted(conn.edge_order) == list(itertools.combinations(range(conn.n), 2))
    assert conn.hops.max() > 1 and np.all(conn.hops[~np.eye(conn.n, dtype=bool)] >= 1)
