"""``sweep_spawn.py``: a sweep whose runs share one spawn of the ranks ends every run with the Θ
that the same run launched alone ends with, bit for bit (the script refuses to print a ratio
otherwise), and it writes its ratio into the record."""

from __future__ import annotations

import json

from benchmarks.sweep_spawn import main


def test_a_sweep_and_the_runs_alone_end_with_the_same_theta(tmp_path, capsys):
    assert main(["--runs", "2", "--out", str(tmp_path / "runs"), "--record", str(tmp_path / "rec")]) == 0
    out = capsys.readouterr().out
    assert "a sweep / the same runs one by one:" in out
    (record,) = (tmp_path / "rec").glob("*.json")
    data = json.loads(record.read_text())
    raw = data["data"]
    assert raw["runs"] == 2 and len(raw["walls"]["sweep"]) == 1
    assert raw["ratio"] == raw["walls"]["sweep"][0] / raw["walls"]["one by one"][0]
