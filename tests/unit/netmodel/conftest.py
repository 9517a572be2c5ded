import pytest

from fedsim.netmodel import build_overlays, connectivity_graph
from fedsim.topology import load_topology
from tests.harness import REPO


@pytest.fixture(scope="package")
def networks():
    """The two underlays of MultigraphFL's Table 3, each with its connectivity graph and overlays
    (built once: the overlays take a second or two)."""
    out = {}
    for name in ("aws_na", "gaia"):
        conn = connectivity_graph(load_topology(REPO / "topologies" / f"{name}.yaml"))
        out[name] = (conn, build_overlays(conn))
    return out
