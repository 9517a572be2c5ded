"""The delay model (``model.py``): Karp's maximum cycle mean against brute force, the connectivity
graph's constants and lookups, the tree formula, and the networks it refuses."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import numpy as np
import pytest

from fedsim.cli import main
from fedsim.errors import TopologyError
from fedsim.netmodel import (
    connectivity_graph,
    max_cycle_mean,
    overlay_arc_weights,
    tree_cycle_time,
)
from fedsim.topology import load_topology
from tests.harness import REPO

TOPOLOGIES = REPO / "topologies"


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


def test_tree_formula_equals_karp(networks):
    conn, overlays = networks["aws_na"]
    for kind in ("mst", "delta-mbst"):
        o = overlays[kind]
        w = overlay_arc_weights(conn, o.arcs)
        assert tree_cycle_time(w) == pytest.approx(max_cycle_mean(conn.n, [(i, j, x) for (i, j), x in w.items()]))


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


def test_all_pairs_lookups_are_consistent():
    conn = connectivity_graph(load_topology(TOPOLOGIES / "geant.yaml"))
    assert np.allclose(conn.distance, conn.distance.T)
    assert sorted(conn.edge_order) == list(itertools.combinations(range(conn.n), 2))
    assert conn.hops.max() > 1 and np.all(conn.hops[~np.eye(conn.n, dtype=bool)] >= 1)
