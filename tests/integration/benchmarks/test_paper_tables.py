"""``paper_tables.py mdhfl``: every cell is the mean ± std over seeds of real runs (fedsim sweep
folders), and MDH-FL − standalone is paired by seed."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from tests.harness import REPO, TINY


def test_mdhfl_table_cells_are_mean_and_std_over_seeds_of_the_runs(tmp_path):
    out = tmp_path / "mdhfl"
    sets = [o for o in TINY if not o.startswith(("rounds=", "train.eval_every=", "train.batch_size="))]
    done = subprocess.run(
        [sys.executable, "benchmarks/paper_tables.py", "mdhfl", "--rounds", "2", "--seeds", "0,1", "--noise", "0.2",
         "--rows", "standalone,mdhfl", "--models", "[cnn,cnn,cnn,cnn]", "--out", str(out),
         "--record", str(tmp_path / "record"),
         *[f"--set={o}" for o in [*sets, "mdhfl.public_samples=16", "mdhfl.align_steps=2"]]],
        cwd=REPO, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cells = json.loads((out / "mdhfl_rows.json").read_text())["cells"]
    acc = {(row, s): json.loads((out / f"{row}_mu20" / f"seed{s}" / "summary.json").read_text())["accuracy_by_round"][-1]
           for row in ("standalone", "mdhfl") for s in (0, 1)}
    for row in ("standalone", "mdhfl"):
        vals = [acc[row, 0], acc[row, 1]]
        assert cells[f"{row}/0.2/r2"]["mean"] == pytest.approx(statistics.mean(vals))
        assert cells[f"{row}/0.2/r2"]["std"] == pytest.approx(statistics.stdev(vals))
    diff = [acc["mdhfl", s] - acc["standalone", s] for s in (0, 1)]
    assert cells["mdhfl-standalone/0.2/r2"]["values"] == pytest.approx(diff)
    assert "±" in done.stdout
    # the dated record holds the printed table: each row's cell is "m ± s" (%) of its runs
    (record,) = (tmp_path / "record").glob("*.json")
    table = json.loads(record.read_text())["tables"][0]
    assert record.with_suffix(".md").is_file() and "mdhfl" in json.loads(record.read_text())["command"]
    for row, label in (("standalone", "standalone (SCE, no exchange)"), ("mdhfl", "MDH-FL (SCE + KL alignment)")):
        vals = [acc[row, 0], acc[row, 1]]
        (cells_row,) = [r for r in table["rows"] if r[0] == label]
        assert cells_row[1] == f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"


def test_seeds_are_checked_before_anything_runs(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/paper_tables.py", "mdhfl", "--seeds", "0,0",
                           "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "--seeds" in done.stderr
    assert not (tmp_path / "x").exists()
