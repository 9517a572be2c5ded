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

    python benchmarks/fminit.py [--quick] [--nproc 2] [--set KEY=VALUE ...]

Rows go to OUTPUT/table.json and table.csv (OUTPUT: runs/fminit, runs/fminit-quick).
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


def run_one(cfg, run_dir: Path, nproc: int) -> dict:
    """One cell: the real runner on spawned ranks (the initial state is cached beforehand)."""
    from fedsim.fminit import prepare_initial_state
    from fedsim.launch import spawn
    from fedsim.plan import build_plan
    from fedsim.trainer import run_jobs

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


def main(argv: list[str] | None = None) -> int:
    import torch
    from rich.table import Table

    from fedsim.config import load_config
    from fedsim.plan import scenario_for
    from fedsim.topology import resolve_topology
    from fedsim.ui import console

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small images and budgets (a few minutes)")
    ap.add_argument("--nproc", type=int, default=2, help="ranks for the FedAvg and standalone runs (CLL: 1)")
    ap.add_argument("--output", default=None, help="default runs/fminit or runs/fminit-quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of launch/configs/fminit_age_skew.yaml")
    ap.add_argument("--random-only-baselines", action="store_true",
                    help="centralized and standalone only from random initialization (the paper's table)")
    args = ap.parse_args(argv)
    out = Path(args.output or REPO / "runs" / ("fminit-quick" if args.quick else "fminit"))
    base = (QUICK if args.quick else []) + args.overrides + [f"output_dir={out}"]
    torch.set_num_threads(1)  # the init training in this process: 2 threads thrash beside busy ranks

    rows, cells = [], {}
    started = time.perf_counter()
    for init in INITS:
        for scenario in SCENARIOS:
            if args.random_only_baselines and init != "random" and scenario != "cfl":
                continue
            cfg = load_config(CONFIG, base + [f"init={init}", f"scenario={scenario}", f"name={init}-{scenario}"])
            cfg.scenario = scenario_for(cfg)
            if scenario != "cfl":  # only the final models are scored
                cfg.train.eval_every = cfg.rounds
            if scenario == "cll":  # the same epochs over the pooled data as the silos do together
                cfg.train.local_steps *= resolve_topology(cfg.topology).num_silos
            t0 = time.perf_counter()
            summary = run_one(cfg, out / cfg.name, args.nproc)
            dice = summary["mean_silo_dice"] if scenario == "standalone" else summary["foundation_dice"]
            cells[init, scenario] = summary
            console().print(f"{INITS[init]:>14} · {SCENARIOS[scenario]:<11} Dice {pct(dice)}  "
                            f"({time.perf_counter() - t0:.0f} s, of which runner {summary['bench_seconds']:.0f} s)")
        fed = cells[init, "cfl"]
        by_round = fed["foundation_dice_by_round"]
        cfg = load_config(CONFIG, base + [f"init={init}"])
        rows.append({
            "init": init,
            "federated": fed["foundation_dice"],
            "centralized": cells.get((init, "cll"), {}).get("foundation_dice"),
            "standalone": cells.get((init, "standalone"), {}).get("mean_silo_dice"),
            "standalone_per_silo": [s["accuracy"] for s in cells.get((init, "standalone"), {}).get("silos", [])],
            "federated_by_round": by_round,
            "initial_dice": initial_dice(cfg),
            "rounds": cfg.rounds,
            "federated_seconds": fed["wall_time_s"],
            "seconds": sum(c["bench_seconds"] for (i, _), c in cells.items() if i == init),
        })
    cfg = load_config(CONFIG, base)
    teacher = teacher_dice(cfg)
    init_seconds = {}
    for kind in ("teacher", "pretrained", "fm"):
        from fedsim.fminit import cache_path

        meta = cache_path(cfg, kind).with_suffix(".json")
        init_seconds[kind] = json.loads(meta.read_text())["seconds"] if meta.is_file() else None
    last = cfg.rounds
    show = [r for r in (1, 3, last) if r <= last]
    show = list(dict.fromkeys(show))
    title = (f"Table 1 (seed 004): Dice (%) of FedAvg from each initialization, age skew, {resolve_topology(cfg.topology).num_silos} silos, "
             f"{cfg.rounds} rounds × {cfg.train.local_steps} steps, {cfg.data.image_size}px"
             + (" [quick]" if args.quick else ""))
    table = Table(title=title)
    for col in ("Initialization", "Federated", "Centralized", "Standalone", *[f"Θ r{r}" for r in show],
                "before FL", "time s"):
        table.add_column(col, justify="left" if col == "Initialization" else "right")
    for r in rows:
        table.add_row(INITS[r["init"]], pct(r["federated"]), pct(r["centralized"]), pct(r["standalone"]),
                      *[pct(r["federated_by_round"][k - 1]) for k in show], pct(r["initial_dice"]),
                      f"{r['seconds']:.0f}")
    con = console()
    con.print(table)
    con.print(f"teacher ({cfg.fminit.teacher.name} U-Net, {cfg.fminit.teacher_samples} images, "
              f"{cfg.fminit.teacher_steps} steps) Dice {pct(teacher)} · init training s: "
              + ", ".join(f"{k} {v:.0f}" for k, v in init_seconds.items() if v is not None)
              + f" (cached in {cache_path(cfg, 'fm').parent}) · total {time.perf_counter() - started:.0f} s")
    payload = {"quick": args.quick, "overrides": base, "teacher_dice": teacher, "init_seconds": init_seconds,
               "rows": rows}
    (out / "table.json").write_text(json.dumps(payload, indent=2))
    with open(out / "table.csv", "w", newline="") as fh:
        keys = ["init", "federated", "centralized", "standalone", *[f"theta_round_{k}" for k in show],
                "initial_dice", "seconds"]
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({"init": r["init"], "federated": r["federated"], "centralized": r["centralized"],
                        "standalone": r["standalone"], "initial_dice": r["initial_dice"], "seconds": r["seconds"],
                        **{f"theta_round_{k}": r["federated_by_round"][k - 1] for k in show}})
    from fedsim.plots import plot_runs

    plot_runs([out / f"{init}-cfl" for init in INITS], out / "convergence.png",
              [f"FedAvg from {INITS[init]}" for init in INITS])
    con.print(f"rows in {out / 'table.json'} and {out / 'table.csv'}; Dice per round in {out / 'convergence.png'}")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
