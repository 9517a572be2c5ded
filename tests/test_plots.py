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


EFM = ["algorithm=fedefm", "topology=ring-4", "fedefm.overseas_steps=1", "fedefm.distill_steps=1", "emd.grid=2",
       "rounds=3"]


def test_weights_plot_of_a_fedefm_run_draws_every_silos_teachers_by_round(tmp_path, capsys):
    from fedsim.callbacks.jsonl import read_records
    from fedsim.plots import read_teacher_weights

    from .algorithms.test_equivalence import run_distributed

    run_distributed(tmp_path, EFM + ["name=efm"], nproc=1)
    series = read_teacher_weights(tmp_path / "efm")
    expected: dict = {}
    for k, recs in read_records(tmp_path / "efm").items():
        for rec in recs:
            for key in ("teacher_weights", "teacher_similarity"):
                for j, v in rec.get(key, {}).items():
                    expected.setdefault(rec["silo"], {}).setdefault(key, {}).setdefault(int(j), []).append((k, v))
    assert series == expected
    assert [r for r, _ in series[0]["teacher_weights"][1]] == [1, 2]  # round 0 trains locally
    out = tmp_path / "w.png"
    assert main(["plot", str(tmp_path / "efm"), "--weights", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert main(["plot", str(tmp_path / "efm"), str(tmp_path / "efm"), "--weights"]) == 2
    assert "one run" in capsys.readouterr().err


def test_weights_plot_of_a_run_without_teacher_weights_is_exit_2(tmp_path, capsys):
    from .algorithms.test_equivalence import run_distributed

    run_distributed(tmp_path, ["algorithm=fedavg", "name=avg", "rounds=1"], nproc=1)
    out = tmp_path / "w.png"
    assert main(["plot", str(tmp_path / "avg"), "--weights", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no teacher weights" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
