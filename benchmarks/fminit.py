"""Seed 004, Table 1: where to begin? FedAvg on U-Net segmentation of catheter and guidewire from
random, pre-trained and FM-instructed initialization, under age skew, against centralized (CLL)
and standalone learning; Dice (mean foreground Dice on the test set, in %).

Every cell is a real run of ``fedsim.trainer`` on spawned gloo ranks (launch/configs/
fminit_age_skew.yaml: 3 silos, ``data.partition: attribute``). The initial states are trained
once before any rank starts and cached under OUTPUT/_init_cache: the teacher (an R50-ViT U-Net on
its own larger public set, our SAM-Med2D stand-in), the pre-trained student (segmentation loss
on the proxy set D^P) and the FM-instructed student (0.6·KL + 0.4·Dice on D^P).
Columns: FedAvg's Θ after the last round; CLL (all silos' data pooled, num_silos × local_steps
per round: the same epochs as the silos together); standalone (each silo alone, mean over
silos); Θ after rounds 1 and 3 (convergence speed); the initial state alone ("before FL").

Every cell is the mean ± std (sample std) over experiment seeds (``--seeds``, default 0,1,2:
the seed of the data, the initial weights, the batches and of the teacher / student training);
the initial states are trained and cached once per seed.

    python benchmarks/fminit.py [--quick] [--seeds 0,1,2] [--nproc 2] [--set KEY=VALUE ...]

Cells go to OUTPUT/table.json and table.csv (OUTPUT: runs/fminit, runs/fminit-quick); the runs of
seed s to OUTPUT/s<s>/<init>-<scenario>/.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "launch" / "configs" / "fminit_age_skew.yaml"
INITS = {"random": "Random", "pretrained": "Pre-training", "fm": "FM-instructed"}
SCENARIOS = {"cfl": "FedAvg", "cll": "Centralized", "standalone": "Standalone"}
# --quick: smaller images, sets and budgets (the whole table in a few minutes on 2 cores)
QUICK = ["data.image_size=32", "data.samples_per_silo=128", "data.test_samples=128", "rounds=5",
         "train.local_steps=5", "fminit.proxy_samples=128", "fminit.student_steps=60",
         "fminit.teacher_samples=512", "fminit.teacher_steps=100"]


def run_one(cfg, run_dir: Path, nproc: int, fresh: bool = False) -> dict:
    """One cell: the real runner on spawned ranks (the initial state is cached beforehand). A run
    directory that already holds a finished run of the same config is reused unless ``fresh``."""
    from fedsim.fminit import prepare_initial_state
    from fedsim.launch import spawn
    from fedsim.plan import build_plan
    from fedsim.trainer import run_jobs

    done = run_dir / "summary.json"
    if not fresh and done.is_file() and (run_dir / "config.yaml").read_text() == cfg.to_yaml():
        summary = json.loads(done.read_text())
        summary.setdefault("bench_seconds", summary["wall_time_s"])
        return summary
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    prepare_initial_state(cfg, print)
    nproc = 1 if cfg.scenario == "cll" else nproc
    started = time.perf_counter()
    summary = spawn(run_jobs, nproc, [build_plan(cfg, run_dir, nproc)], False, device=cfg.device,
                    timeout_s=cfg.timeout_s)[0][0]
    summary["bench_seconds"] = time.perf_counter() - started
    done.write_text(json.dumps(summary, indent=2))  # with bench_seconds, for a later reuse
    return summary


def initial_dice(cfg) -> float:
    """Dice of the initial state itself on the test set (before any federated round)."""
    import torch

    from fedsim.data import load_federated
    from fedsim.federation import evaluate_segmentation
    from fedsim.fminit import initial_state, student_model

    model = student_model(cfg)
    state = initial_state(cfg)
    if state is not None:
        model.load_state_dict(state)
    test = load_federated(cfg.data, 3, cfg.seed, silos=[]).test
    return evaluate_segmentation(model, test, torch.device("cpu"))[1]


def teacher_dice(cfg) -> float:
    import torch

    from fedsim.data import load_federated
    from fedsim.federation import evaluate_segmentation
    from fedsim.fminit import teacher_model, teacher_state

    model = teacher_model(cfg)
    model.load_state_dict(teacher_state(cfg, print))
    test = load_federated(cfg.data, 3, cfg.seed, silos=[]).test
    return evaluate_segmentation(model, test, torch.device("cpu"))[1]


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def run_seed(base: list[str], seed: int, out: Path, nproc: int, random_only: bool, log,
             fresh: bool = False) -> dict:
    """Every cell of the table at experiment seed ``seed`` (data, initial weights, batches, and
    the teacher / proxy training of the initial states): {(init, column): Dice} plus the rows'
    details."""
    from fedsim.config import load_config
    from fedsim.plan import scenario_for
    from fedsim.topology import resolve_topology

    cells, rows = {}, []
    for init in INITS:
        runs = {}
        for scenario in SCENARIOS:
            if random_only and init != "random" and scenario != "cfl":
                continue
            cfg = load_config(CONFIG, base + [f"seed={seed}", f"init={init}", f"scenario={scenario}",
                                              f"name={init}-{scenario}"])
            cfg.scenario = scenario_for(cfg)
            if scenario != "cfl":  # only the final models are scored
                cfg.train.eval_every = cfg.rounds
            if scenario == "cll":  # the same epochs over the pooled data as the silos do together
                cfg.train.local_steps *= resolve_topology(cfg.topology).num_silos
            t0 = time.perf_counter()
            summary = run_one(cfg, out / f"s{seed}" / cfg.name, nproc, fresh)
            runs[scenario] = summary
            dice = summary["mean_silo_dice"] if scenario == "standalone" else summary["foundation_dice"]
            log(f"seed {seed} · {INITS[init]:>14} · {SCENARIOS[scenario]:<11} Dice {pct(dice)}  "
                f"({time.perf_counter() - t0:.0f} s, of which runner {summary['bench_seconds']:.0f} s)")
        cfg = load_config(CONFIG, base + [f"seed={seed}", f"init={init}"])
        by_round = runs["cfl"]["foundation_dice_by_round"]
        row = {
            "seed": seed, "init": init,
            "federated": runs["cfl"]["foundation_dice"],
            "centralized": runs.get("cll", {}).get("foundation_dice"),
            "standalone": runs.get("standalone", {}).get("mean_silo_dice"),
            "standalone_per_silo": [s["accuracy"] for s in runs.get("standalone", {}).get("silos", [])],
            "federated_by_round": by_round,
            "initial_dice": initial_dice(cfg),
            "rounds": cfg.rounds,
            "federated_seconds": runs["cfl"]["wall_time_s"],
            "seconds": sum(r["bench_seconds"] for r in runs.values()),
        }
        rows.append(row)
        for col in ("federated", "centralized", "standalone", "initial_dice"):
            cells[init, col] = row[col]
        for k, v in enumerate(by_round, start=1):
            cells[init, f"r{k}"] = v
    cfg = load_config(CONFIG, base + [f"seed={seed}"])
    cells["teacher", "dice"] = teacher_dice(cfg)
    return {"cells": cells, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    import torch
    from rich.table import Table

    from benchmarks.common import over_seeds, parse_seeds
    from fedsim.config import load_config
    from fedsim.fminit import cache_path
    from fedsim.topology import resolve_topology
    from fedsim.ui import console

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small images and budgets (a few minutes per seed)")
    ap.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2],
                    help="experiment seeds, e.g. 0,1,2 or 0-4 (default 0,1,2); every cell is mean ± std over them")
    ap.add_argument("--nproc", type=int, default=2, help="ranks for the FedAvg and standalone runs (CLL: 1)")
    ap.add_argument("--output", default=None, help="default runs/fminit or runs/fminit-quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of launch/configs/fminit_age_skew.yaml")
    ap.add_argument("--random-only-baselines", action="store_true",
                    help="centralized and standalone only from random initialization (the paper's table)")
    ap.add_argument("--fresh", action="store_true", help="re-run cells whose run directory holds the same config")
    args = ap.parse_args(argv)
    out = Path(args.output or REPO / "runs" / ("fminit-quick" if args.quick else "fminit"))
    base = (QUICK if args.quick else []) + args.overrides + [f"output_dir={out}"]
    if any(o.split("=", 1)[0].strip() == "seed" for o in args.overrides):
        ap.error("set the experiment seeds with --seeds, not --set seed=...")
    torch.set_num_threads(1)  # the init training in this process: 2 threads thrash beside busy ranks
    con = console()
    started = time.perf_counter()
    per_seed: dict[int, dict] = {}

    def one_seed(seed: int) -> dict:
        per_seed[seed] = run_seed(base, seed, out, args.nproc, args.random_only_baselines, con.print, args.fresh)
        return per_seed[seed]["cells"]

    stats = over_seeds(args.seeds, one_seed)
    cfg = load_config(CONFIG, base)
    last = cfg.rounds
    show = list(dict.fromkeys(r for r in (1, 3, last) if r <= last))
    seeds = ",".join(map(str, args.seeds))
    title = (f"Table 1 (seed 004): Dice (%) of FedAvg from each initialization, age skew, "
             f"{resolve_topology(cfg.topology).num_silos} silos, {cfg.rounds} rounds × {cfg.train.local_steps} steps, "
             f"{cfg.data.image_size}px; mean ± std over seeds {seeds}" + (" [quick]" if args.quick else ""))
    table = Table(title=title)
    for col in ("Initialization", "Federated", "Centralized", "Standalone", *[f"Θ r{r}" for r in show],
                "before FL", "time s"):
        table.add_column(col, justify="left" if col == "Initialization" else "right")
    for init in INITS:
        seconds = sum(r["seconds"] for p in per_seed.values() for r in p["rows"] if r["init"] == init)
        table.add_row(INITS[init], *[stats[init, c].format() if (init, c) in stats else "–"
                                     for c in ("federated", "centralized", "standalone", *[f"r{r}" for r in show],
                                               "initial_dice")],
                      f"{seconds:.0f}")
    con.print(table)
    init_seconds: dict[str, list[float]] = {}
    for seed in args.seeds:
        seeded = load_config(CONFIG, base + [f"seed={seed}"])
        for kind in ("teacher", "pretrained", "fm"):
            meta = cache_path(seeded, kind).with_suffix(".json")
            if meta.is_file():
                init_seconds.setdefault(kind, []).append(json.loads(meta.read_text())["seconds"])
    con.print(f"teacher ({cfg.fminit.teacher.name} U-Net, {cfg.fminit.teacher_samples} images, "
              f"{cfg.fminit.teacher_steps} steps) Dice {stats['teacher', 'dice'].format()} · init training s per seed: "
              + ", ".join(f"{k} {sum(v) / len(v):.0f}" for k, v in init_seconds.items())
              + f" (cached in {cache_path(cfg, 'fm').parent}) · total {time.perf_counter() - started:.0f} s")
    cell_stats = {f"{a}/{b}": s.to_dict() for (a, b), s in stats.items()}
    payload = {"quick": args.quick, "seeds": args.seeds, "overrides": base, "cells": cell_stats,
               "init_seconds": init_seconds, "rows": [r for p in per_seed.values() for r in p["rows"]]}
    (out / "table.json").write_text(json.dumps(payload, indent=2))
    with open(out / "table.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["init", "column", "mean", "std", "n", "values"])
        for (a, b), s in stats.items():
            w.writerow([a, b, s.mean, s.std, s.n, " ".join(f"{v:.6f}" for v in s.values)])
    from fedsim.plots import plot_runs

    first = out / f"s{args.seeds[0]}"
    plot_runs([first / f"{init}-cfl" for init in INITS], out / "convergence.png",
              [f"FedAvg from {INITS[init]} (seed {args.seeds[0]})" for init in INITS])
    con.print(f"cells in {out / 'table.json'} and {out / 'table.csv'}; Dice per round in {out / 'convergence.png'}")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
