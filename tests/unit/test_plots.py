"""Run plots read the per-silo metrics correctly."""

from __future__ import annotations

import json

import pytest

from fedsim.cli import main
from fedsim.plots import read_rounds


def write_run(root, rows_by_silo):
    (root / "metrics").mkdir(parents=True)
    for silo, rows in rows_by_silo.items():
        (root / "metrics" / f"silo_{silo}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_rounds_are_the_silo_mean_and_the_slowest_clock(tmp_path):
    write_run(tmp_path / "r", {
        0: [{"round": 0, "accuracy": 0.2, "foundation_accuracy": 0.3, "sim_time_ms": 10.0, "wall_time_s": 1.0},
            {"round": 1, "accuracy": 0.5, "foundation_accuracy": 0.6, "sim_time_ms": 25.0, "wall_time_s": 2.0}],
        1: [{"round": 0, "accuracy": 0.4, "foundation_accuracy": 0.3, "sim_time_ms": 12.0, "wall_time_s": 1.1},
            {"round": 1, "accuracy": None, "foundation_accuracy": 0.6, "sim_time_ms": 20.0, "wall_time_s": 2.1}],
    })
    rows = read_rounds(tmp_path / "r")
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["accuracy"] == pytest.approx(0.3) and rows[1]["accuracy"] == pytest.approx(0.5)
    assert rows[0]["sim_time_ms"] == 12.0 and rows[1]["sim_time_ms"] == 25.0
    assert rows[1]["foundation_accuracy"] == 0.6
    assert main(["plot", str(tmp_path / "r"), "-o", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 5000


def test_plot_of_a_folder_without_metrics_is_exit_2(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics/silo_*.jsonl" in capsys.readouterr().err
