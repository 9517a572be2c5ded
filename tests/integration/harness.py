"""Runs on real gloo ranks (spawned processes) and the command line in a subprocess: what the
integration tests share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from fedsim.checkpoint import load_silo_states
from fedsim.config import load_config
from fedsim.launch import spawn
from fedsim.plan import build_plan, scenario_for
from fedsim.trainer import run_jobs, run_rank
from tests.harness import REPO, TINY


def run_distributed(tmp_path: Path, overrides: list[str], nproc: int = 2) -> dict[int, list[torch.Tensor]]:
    """Every silo's final model (its tensors in state-dict order) of a :data:`TINY` run on ``nproc`` gloo ranks."""
    cfg = load_config(None, TINY + overrides + [f"output_dir={tmp_path}"])
    cfg.scenario = scenario_for(cfg)
    run_dir = tmp_path / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    spawn(run_rank, nproc, build_plan(cfg, run_dir, nproc))
    last = run_dir / "checkpoints" / f"round_{cfg.rounds - 1}"
    return {i: list(s["model"].values()) for i, s in load_silo_states(last).items()}


def run_states(tmp_path: Path, overrides: list[str], nproc: int, name: str = "r", resume: bool = False):
    """(final silo states of the checkpoint, metric records) of a run on ``nproc`` gloo ranks."""
    cfg = load_config(None, TINY + overrides + [f"output_dir={tmp_path}", f"name={name}"])
    cfg.scenario = scenario_for(cfg)
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True, exist_ok=True)
    spawn(run_rank, nproc, build_plan(cfg, run_dir, nproc, resume=resume))
    states = load_silo_states(run_dir / "checkpoints" / f"round_{cfg.rounds - 1}")
    records = [json.loads(line) for p in sorted((run_dir / "metrics").glob("*.jsonl"))
               for line in p.read_text().splitlines()]
    return states, records


def run_several(tmp_path, runs: dict[str, list[str]], nproc: int = 2) -> None:
    """Several tiny runs in one process group (one spawn: cheaper than one per run)."""
    plans = []
    for name, overrides in runs.items():
        cfg = load_config(None, TINY + overrides + [f"output_dir={tmp_path}", f"name={name}"])
        plans.append(build_plan(cfg, tmp_path / name, nproc))
    spawn(run_jobs, nproc, plans, False)


def run_with_plan(tmp_path: Path, overrides: list[str], nproc: int, name: str):
    """(plan, every silo's final model, metric records, summary) of a :data:`TINY` run on ``nproc`` ranks."""
    cfg = load_config(None, TINY + overrides + [f"output_dir={tmp_path}", f"name={name}"])
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = build_plan(cfg, run_dir, nproc)
    spawn(run_rank, nproc, plan)
    last = run_dir / "checkpoints" / f"round_{cfg.rounds - 1}"
    models = {i: list(s["model"].values()) for i, s in load_silo_states(last).items()}
    records = [json.loads(line) for p in sorted((run_dir / "metrics").glob("*.jsonl"))
               for line in p.read_text().splitlines()]
    return plan, models, records, json.loads((run_dir / "summary.json").read_text())


def fedsim(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m fedsim ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fedsim", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
