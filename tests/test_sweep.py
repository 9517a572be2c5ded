"""``fedsim sweep``: every (point, seed) is an ordinary run, and the table is their mean ± std."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.sweep import grid_points, split_values

from .algorithms.test_equivalence import TINY

REPO = Path(__file__).resolve().parents[1]
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


def test_grid_values_keep_commas_inside_brackets():
    assert split_values("a,[1, 2],{x: 1, y: 2}") == ["a", "[1, 2]", "{x: 1, y: 2}"]
    points = grid_points(["a=1,2", "b=x,y"])
    assert [p.overrides for p in points] == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"]]


def test_a_saved_config_from_before_a_new_key_still_matches():
    """A run saved before fedsim grew a key (its default keeps the old behaviour) is the same run;
    a changed value or a key that no longer exists is not."""
    import yaml

    from fedsim.config import load_config
    from fedsim.experiment import same_config

    cfg = load_config(None, ["rounds=3"])
    saved = cfg.to_dict()
    del saved["data"]["validation_fraction"], saved["log"]
    assert same_config(yaml.safe_dump(saved), cfg)
    assert not same_config(yaml.safe_dump(saved), load_config(None, ["rounds=3", "data.validation_fraction=0.1"]))
    assert not same_config(yaml.safe_dump(saved), load_config(None, ["rounds=4"]))
    saved["fedefm"]["sync_every"] = 0
    assert not same_config(yaml.safe_dump(saved), cfg)
    del saved["fedefm"]["sync_every"]
    saved["output_dir"], saved["name"] = "/elsewhere/runs", "other"  # where it lives is not what it is
    assert same_config(yaml.safe_dump(saved), cfg)
    assert not same_config("- a list", cfg)


def test_a_run_whose_downstream_predates_the_seeded_recipe_is_not_reused(tmp_path):
    """A finished run of the same config is reused only if its downstream.json holds rows from
    today's recipe (one fine-tune per seed, at the configured image size): an older file was
    measured another way."""
    from fedsim.experiment import resolve_config
    from fedsim.sweep import Point, Run, _finished

    cfg, _ = resolve_config(None, [*TINY, "compare_with=[]", "algorithm=fedavg"])
    run = Run(Point("p"), 0, cfg, tmp_path, 1)
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    (tmp_path / "summary.json").write_text("{}")
    assert cfg.downstream.enabled and not _finished(run)  # no downstream.json yet
    ds = tmp_path / "downstream.json"
    ds.write_text(json.dumps([{"init": "random", "dice": 0.7, "steps": 60, "seed": 0}]))
    assert not _finished(run)
    rows = [{"init": "random", "dice": 0.7, "dice_std": 0.01, "seeds": [0, 1],
             "per_seed": [{"seed": 0, "dice": 0.69}, {"seed": 1, "dice": 0.71}]}]
    ds.write_text(json.dumps(rows))
    assert not _finished(run)  # seeded, but on images of an unrecorded (older: the run's) size
    sizes = {"segmentation": cfg.downstream.seg_image_size, "classification": cfg.data.image_size}
    ds.write_text(json.dumps([{**rows[0], "image_sizes": sizes}]))
    assert _finished(run)
    ds.write_text(json.dumps([{**rows[0], "image_sizes": {**sizes, "segmentation": cfg.data.image_size}}]))
    assert not _finished(run)
    ds.write_text("not json")
    assert not _finished(run)
