"""The simulated clock (``clock.py``): equal delays on a ring, growth at the cycle time, a round trip,
the multigraph's weak arcs, and where an arc's delay comes from."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.netmodel import (
    DelayModel,
    SimClock,
    arc_delays,
    connectivity_graph,
    overlay_arc_weights,
)
from fedsim.topology import load_topology, make_topology, parse_topology
from tests.harness import REPO

TOPOLOGIES = REPO / "topologies"


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
