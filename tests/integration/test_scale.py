"""Many silos per rank: compact data, sampled evaluation and per-rank checkpoints, each
checked against an independent reference (float storage, the full evaluation, a run that was never
interrupted) on real spawned gloo ranks.

The checks that need no process: tests/unit/test_scale.py."""

from __future__ import annotations

import json

import pytest
import torch

from fedsim.checkpoint import load_silo_states, usable_checkpoint
from fedsim.config import load_config
from fedsim.evaluation import eval_sample
from fedsim.launch import spawn
from fedsim.plan import build_plan, scenario_for
from fedsim.trainer import run_rank
from tests.harness import TINY


def _run(tmp_path, name: str, overrides: list[str], nproc: int = 2, resume: bool = False):
    cfg = load_config(None, TINY + ["algorithm=gossip", f"output_dir={tmp_path}", f"name={name}", *overrides])
    cfg.scenario = scenario_for(cfg)
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True, exist_ok=True)
    spawn(run_rank, nproc, build_plan(cfg, run_dir, nproc, resume=resume))
    return run_dir


def _records(run_dir) -> dict[tuple[int, int], dict]:
    out = {}
    for path in sorted((run_dir / "metrics").glob("silo_*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out[rec["round"], rec["silo"]] = rec
    return out


def test_a_sampled_evaluation_equals_the_full_one_on_the_sampled_silos(tmp_path):
    job = ["topology=ring:6", "rounds=2", "train.eval_every=1"]
    full = _records(_run(tmp_path, "full", job + ["train.eval_silos=all"]))
    sampled = _records(_run(tmp_path, "sampled", job + ["train.eval_silos=2"]))
    assert full.keys() == sampled.keys()
    for k in range(2):
        chosen = eval_sample(2, 6, seed=0, k=k)
        for i in range(6):
            a, b = full[k, i], sampled[k, i]
            assert a["loss"] == b["loss"]  # the same training either way
            if i in chosen:
                assert (b["accuracy"], b["test_loss"]) == (a["accuracy"], a["test_loss"])
            else:
                assert "accuracy" not in b and "test_loss" not in b
            for key in ("train_time_s", "exchange_time_s", "eval_time_s", "checkpoint_time_s"):
                assert b[key] >= 0
        assert [i for i in range(6) if "accuracy" in sampled[k, i]] == chosen


@pytest.mark.parametrize("silos", [4, 6])
def test_per_rank_checkpoints_resume_bit_identically(tmp_path, silos):
    job = [f"topology=ring:{silos}", "train.eval_every=1"]
    straight = _run(tmp_path, "straight", job + ["rounds=3"])
    _run(tmp_path, "resumed", job + ["rounds=2"])
    last = tmp_path / "resumed" / "checkpoints" / "round_1"
    assert sorted(p.name for p in last.iterdir()) == ["manifest.json", "rank_0.pt", "rank_1.pt"]
    manifest = json.loads((last / "manifest.json").read_text())
    assert sorted(i for meta in manifest["files"].values() for i in meta["silos"]) == list(range(silos))
    # continue on 2 ranks, and (6 silos) on 3 ranks: each rank reads its silos from whichever file holds them
    resumed = _run(tmp_path, "resumed", job + ["rounds=3"], resume=True)
    if silos == 6:
        _run(tmp_path, "three", job + ["rounds=2"])
        three = _run(tmp_path, "three", job + ["rounds=3"], nproc=3, resume=True)
        assert usable_checkpoint(three)[0] == 2
    want = load_silo_states(straight / "checkpoints" / "round_2")
    for run in [resumed] + ([three] if silos == 6 else []):
        got = load_silo_states(run / "checkpoints" / "round_2")
        assert sorted(got) == sorted(want) == list(range(silos))
        for i in want:
            for key, value in want[i]["model"].items():
                assert torch.equal(value, got[i]["model"][key]), (i, key)
            for p, state in want[i]["optimizer"]["state"].items():
                for name, value in state.items():
                    assert torch.equal(value, got[i]["optimizer"]["state"][p][name]), (i, name)
            assert torch.equal(want[i]["batches"]["order"], got[i]["batches"]["order"])
        a, b = _records(straight), _records(run)
        assert [a[2, i]["accuracy"] for i in range(silos)] == [b[2, i]["accuracy"] for i in range(silos)]
        assert torch.equal(torch.load(straight / "foundation.pt")["fc.weight"],
                           torch.load(run / "foundation.pt")["fc.weight"])
