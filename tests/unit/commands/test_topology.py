"""``fedsim topology cycle-time`` and ``overlay``: the CSV of cycle times, a written overlay, and bad
overlay names (exit 2)."""

from __future__ import annotations

import pytest

from fedsim.cli import main
from fedsim.topology import load_topology
from tests.harness import REPO

TOPOLOGIES = REPO / "topologies"


def _run(argv):
    """``fedsim topology ARGV`` through the real command line (errors: one line, exit 2)."""
    return main(["topology", *argv])


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
