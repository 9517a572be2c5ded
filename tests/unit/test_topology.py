"""Topology YAML/GML loading, validation and generation."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from fedsim.errors import TopologyError
from fedsim.topology import gml_to_topology, load_topology, make_topology, parse_topology
from tests.harness import REPO

NETWORKS = REPO.parent / "shared" / "networks"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topo.yaml"
    path.write_text(text)
    return path


def test_spec_example_parses_with_attributes(tmp_path):
    path = write(tmp_path, """
name: ring-4
silos: 4
directed: false
edges:
  - [0, 1]
  - {src: 1, dst: 2, latency_ms: 12.5, bandwidth_mbps: 1000, distance_km: 800}
  - [2, 3]
  - [3, 0]
""")
    topo = load_topology(path)
    assert topo.num_silos == 4 and not topo.directed
    assert topo.in_neighbours(0) == [1, 3] and topo.out_neighbours(2) == [1, 3]
    assert sorted(topo.arcs) == sorted([(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (3, 0), (0, 3)])
    e = topo.edge(2, 1)
    assert (e.latency_ms, e.bandwidth_mbps, e.distance_km) == (12.5, 1000.0, 800.0)


def test_directed_edge_means_src_is_in_neighbour_of_dst():
    topo = parse_topology({"silos": 3, "edges": [[0, 1], [1, 2], [2, 0]]})
    assert topo.in_neighbours(1) == [0] and topo.out_neighbours(1) == [2]
    assert topo.is_strongly_connected()


def test_silo_list_with_names_and_numbers():
    topo = parse_topology({"silos": [{"id": 0, "name": "A", "compute_ms": 4.6, "access_gbps": 10},
                                     {"name": "B"}], "edges": [[0, 1]], "directed": False})
    assert topo.silos[0].name == "A" and topo.silos[0].compute_ms == 4.6 and topo.silos[1].name == "B"


@pytest.mark.parametrize("text,needle", [
    ("silos: 3\nedges: [[0, 5], [1, 2], [2, 0]]", "unknown silo 5"),
    ("silos: 3\nedges: [[0, 0], [0, 1], [1, 2]]", "self-loop on silo 0"),
    ("silos: 3\ndirected: false\nedges: [[0, 1], [1, 0], [1, 2]]", "duplicates edges[0]"),
    ("silos: 4\nedges: [[0, 1], [1, 2], [2, 0]]", "isolated silo(s) 3"),
    ("silos: 2\nedges: [{src: 0, dst: 1, latency_ms: -1}]", "latency_ms must be a non-negative"),
    ("silos: 2\nedges: [{src: 0, dst: 1, bandwidth_mbps: fast}]", "bandwidth_mbps must be a number"),
    ("silos: 2\nedges: [[0, 1]", "not valid YAML"),
    ("edges: [[0, 1]]", "missing key 'silos'"),
])
def test_each_bad_file_is_reported_with_the_file_name(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_every_problem_is_collected_in_one_message(tmp_path):
    path = write(tmp_path, "silos: 4\nedges: [[0, 9], [1, 1], [0, 1], [1, 0]]")
    msg = str(pytest.raises(TopologyError, load_topology, path).value)
    assert "unknown silo 9" in msg and "self-loop" in msg and "isolated silo(s) 2, 3" in msg


def test_not_strongly_connected_only_when_required(tmp_path):
    path = write(tmp_path, "silos: 3\nedges: [[0, 1], [1, 2]]")
    assert not load_topology(path).is_strongly_connected()
    with pytest.raises(TopologyError, match="not strongly connected"):
        load_topology(path, require_strongly_connected=True)


@pytest.mark.parametrize("kind", ["ring", "star", "complete", "chain", "random-regular"])
def test_make_topology_shapes(kind):
    n = 8
    topo = make_topology(kind, n, degree=3)
    g = nx.Graph(topo.arcs)
    assert nx.is_connected(g) and g.number_of_nodes() == n
    degrees = sorted(d for _, d in g.degree())
    expected = {"ring": [2] * n, "star": [1] * (n - 1) + [n - 1], "complete": [n - 1] * n,
                "chain": [1, 1] + [2] * (n - 2), "random-regular": [3] * n}[kind]
    assert degrees == expected


def test_yaml_round_trip(tmp_path):
    topo = load_topology(REPO / "topologies" / "gaia.yaml")
    again = load_topology(topo.save(tmp_path / "g.yaml"))
    assert again.to_dict() == topo.to_dict()


@pytest.mark.parametrize("gml,yaml_name,n", [("gaia", "gaia", 11), ("amazon_us", "aws_na", 22),
                                              ("geantdistance", "geant", 40), ("exodus", "exodus", 79),
                                              ("ebone", "ebone", 87)])
def test_shipped_networks_match_their_gml_in_file_order(gml, yaml_name, n):
    shipped = load_topology(REPO / "topologies" / f"{yaml_name}.yaml")
    assert shipped.num_silos == n and shipped.is_strongly_connected()
    if not NETWORKS.is_dir():
        pytest.skip("shared/networks not beside the REPO")
    reference = nx.read_gml(NETWORKS / f"{gml}.gml", label="label")
    assert [s.name for s in shipped.silos] == list(reference.nodes)
    names = [s.name for s in shipped.silos]
    for e in shipped.edges:
        assert reference.edges[names[e.src], names[e.dst]]["distance"] == e.distance_km
    assert len(shipped.edges) == reference.number_of_edges()
    assert gml_to_topology(NETWORKS / f"{gml}.gml", name=yaml_name).to_dict() == shipped.to_dict()


def test_the_authors_gaia_ring_is_a_tour_of_gaia_with_its_underlay_latencies():
    """gaia-ring.yaml (the FedEFM authors' ring.gml): every Gaia silo, in gaia.yaml's order, on one
    cycle, each edge's latency the underlay's 0.0085 ms/km · distance + 4 ms of that silo pair."""
    ring = load_topology(REPO / "topologies" / "gaia-ring.yaml")
    gaia = load_topology(REPO / "topologies" / "gaia.yaml")
    assert [s.name for s in ring.silos] == [s.name for s in gaia.silos]
    g = nx.Graph([(e.src, e.dst) for e in ring.edges])
    assert sorted(d for _, d in g.degree()) == [2] * 11 and nx.is_connected(g)
    distance = {frozenset((e.src, e.dst)): e.distance_km for e in gaia.edges}
    for e in ring.edges:
        assert e.latency_ms == pytest.approx(0.0085 * distance[frozenset((e.src, e.dst))] + 4, abs=1e-9)


def test_gml_with_missing_distance_fails(tmp_path):
    path = tmp_path / "net.gml"
    path.write_text('graph [\n node [ id 0 label "a" ]\n node [ id 1 label "b" ]\n edge [ source 0 target 1 ]\n]\n')
    with pytest.raises(TopologyError, match="has no 'distance'"):
        gml_to_topology(path)
