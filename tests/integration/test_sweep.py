"""``fedsim sweep``: every (point, seed) is an ordinary run, and the table is their mean ± std.

The checks that need no process: tests/unit/test_sweep.py."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, TINY

BASE = [*TINY, "compare_with=[]", "downstream.enabled=false", "algorithm=fedavg"]


def _sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedsim", "sweep", "--out", str(out), "--nproc", "2", "--quiet",
         *[f"--set={o}" for o in BASE], *extra],
        cwd=REPO, capture_output=True, text=True,
    )


def test_two_points_two_seeds_write_four_runs_and_their_mean_and_std(tmp_path):
    out = tmp_path / "sw"
    done = _sweep(out, "--set-grid", "train.local_steps=1,2", "--seeds", "0,1", "--parallel", "2")
    assert done.returncode == 0, done.stderr
    summaries = sorted(out.glob("*/seed*/summary.json"))
    assert len(summaries) == 4
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["point"] for r in rows] == ["train.local_steps=1", "train.local_steps=2"]
    for row in rows:
        runs = [json.loads((out / row["point"] / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        assert [r["seed"] for r in runs] == [0, 1]
        assert runs[0]["rounds"] == 2
        for key in ("foundation_accuracy", "mean_silo_accuracy", "wall_time_s"):
            vals = [r[key] for r in runs]
            assert row["mean"][key] == pytest.approx(statistics.mean(vals))
            assert row["std"][key] == pytest.approx(statistics.stdev(vals))
    assert rows[0]["mean"]["grad_steps_per_round"] == 1 and rows[1]["mean"]["grad_steps_per_round"] == 2
    assert "±" in done.stdout and (out / "sweep.png").is_file() and (out / "sweep.csv").is_file()
    # the same sweep again reuses every finished run
    stamp = [p.stat().st_mtime_ns for p in summaries]
    again = _sweep(out, "--set-grid", "train.local_steps=1,2", "--seeds", "0,1")
    assert again.returncode == 0, again.stderr
    assert [p.stat().st_mtime_ns for p in summaries] == stamp


def test_a_bad_grid_value_is_one_line_before_anything_runs(tmp_path):
    out = tmp_path / "bad"
    done = _sweep(out, "--set-grid", "train.lr=0.001,-1", "--seeds", "0")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "train.lr" in done.stderr
    assert not out.exists()


def test_a_folder_of_another_config_is_not_overwritten(tmp_path):
    out = tmp_path / "sw"
    assert _sweep(out, "--set-grid", "rounds=1", "--seeds", "0").returncode == 0
    before = (out / "rounds=1" / "seed0" / "summary.json").read_text()
    done = _sweep(out, "--set-grid", "rounds=1", "--seeds", "0", "--set", "train.local_steps=3")
    assert done.returncode == 2 and "another config" in done.stderr
    assert (out / "rounds=1" / "seed0" / "summary.json").read_text() == before
