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

The runs are ``fedsim sweep`` run folders, OUTPUT/<init>-<scenario>/seed<s>/ (a finished run whose
config matches is reused; use a new --output after changing code); the cells go to
OUTPUT/table.json and table.csv (OUTPUT: runs/fminit, runs/fminit-quick).
"""

from __future__ import annotations

import argparse
import csv
import json
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


def initial_dice(cfg) -> float:
    """Dice of the initial state itself on the test set (before any federated round)."""
    import torch

    from fedsim.data import load_federated
    from fedsim.evaluation import evaluate_segmentation
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
    from fedsim.evaluation import evaluate_segmentation
    from fedsim.fminit import teacher_model, teacher_state

    model = teacher_model(cfg)
    model.load_state_dict(teacher_state(cfg, print))
    test = load_federated(cfg.data, 3, cfg.seed, silos=[]).test
    return evaluate_segmentation(model, test, torch.device("cpu"))[1]


def sweep_points(base: list[str], random_only: bool) -> list[tuple[str, list[str]]]:
    """The table's runs (label ``<init>-<scenario>``, overrides): FedAvg (CFL) from
    each initialization, CLL (num_silos × local_steps per round: the same epochs over the pooled
    data as the silos do together) and standalone, both scored only at the end."""
    from fedsim.config import load_config
    from fedsim.topology import resolve_topology

    cfg = load_config(CONFIG, base)
    points = []
    for init in INITS:
        for scenario in SCENARIOS:
            if random_only and init != "random" and scenario != "cfl":
                continue
            ov = [f"init={init}", f"scenario={scenario}"]
            if scenario != "cfl":
                ov.append(f"train.eval_every={cfg.rounds}")
            if scenario == "cll":
                ov.append(f"train.local_steps={cfg.train.local_steps * resolve_topology(cfg.topology).num_silos}")
            points.append((f"{init}-{scenario}", ov))
    return points


def seed_cells(summaries: dict[str, dict], cfg_for) -> dict[tuple[str, str], float | None]:
    """One seed's cells {(init, column): Dice} from its runs' summaries ({point: summary});
    ``cfg_for(init)`` is that seed's config for the initial state's own Dice."""
    cells: dict[tuple[str, str], float | None] = {}
    for init in INITS:
        fed = summaries[f"{init}-cfl"]
        cells[init, "federated"] = fed["foundation_dice"]
        cells[init, "centralized"] = summaries.get(f"{init}-cll", {}).get("foundation_dice")
        cells[init, "standalone"] = summaries.get(f"{init}-standalone", {}).get("mean_silo_dice")
        for k, v in enumerate(fed["foundation_dice_by_round"], start=1):
            cells[init, f"r{k}"] = v
        cells[init, "initial_dice"] = initial_dice(cfg_for(init))
    return cells


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.common import Record, add_record_args, cell_stats, pm, seeds_arg, sweep_runs
    from fedsim.config import load_config
    from fedsim.fminit import cache_path
    from fedsim.report import console_table
    from fedsim.stats import mean_std
    from fedsim.topology import resolve_topology
    from fedsim.ui import console

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small images and budgets (a few minutes per seed)")
    ap.add_argument("--seeds", type=seeds_arg, default=[0, 1, 2],
                    help="experiment seeds, e.g. 0,1,2 (default 0,1,2); every cell is mean ± std over them")
    ap.add_argument("--nproc", type=int, default=2, help="ranks for the FedAvg and standalone runs (CLL: 1)")
    ap.add_argument("--output", default=None, help="default runs/fminit or runs/fminit-quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of launch/configs/fminit_age_skew.yaml")
    ap.add_argument("--random-only-baselines", action="store_true",
                    help="centralized and standalone only from random initialization (the paper's table)")
    add_record_args(ap, "fminit")
    args = ap.parse_args(argv)
    rec = Record.from_args(args, "fminit", __file__, argv, variant="quick" if args.quick else "")
    out = Path(args.output or REPO / "runs" / ("fminit-quick" if args.quick else "fminit"))
    base = (QUICK if args.quick else []) + args.overrides + [f"output_dir={out}"]
    if any(o.split("=", 1)[0].strip() == "seed" for o in args.overrides):
        ap.error("set the experiment seeds with --seeds, not --set seed=...")
    torch.set_num_threads(1)  # the init training in this process: 2 threads thrash beside busy ranks
    con = console()
    started = time.perf_counter()
    con.print(f"initial states are trained before their runs, cached in {out / '_init_cache'}")
    summaries = sweep_runs(sweep_points(base, args.random_only_baselines), base, args.seeds, out, args.nproc,
                           con.print, config=CONFIG)
    per_seed: dict[int, dict] = {}
    for seed in args.seeds:
        mine = {label: s for (label, sd), s in summaries.items() if sd == seed}
        per_seed[seed] = seed_cells(mine, lambda init, seed=seed: load_config(CONFIG, [*base, f"seed={seed}",
                                                                                      f"init={init}"]))
        per_seed[seed]["teacher", "dice"] = teacher_dice(load_config(CONFIG, [*base, f"seed={seed}"]))
    keys = list(dict.fromkeys(c for cells in per_seed.values() for c in cells))
    values = {c: [per_seed[seed].get(c) for seed in args.seeds] for c in keys}
    cfg = load_config(CONFIG, base)
    last = cfg.rounds
    show = list(dict.fromkeys(r for r in (1, 3, last) if r <= last))
    seeds = ",".join(map(str, args.seeds))
    title = (f"Table 1 (Li and Yang): Dice (%) of FedAvg from each initialization, age skew, "
             f"{resolve_topology(cfg.topology).num_silos} silos, {cfg.rounds} rounds × {cfg.train.local_steps} steps, "
             f"{cfg.data.image_size}px; mean ± std over seeds {seeds}" + (" [quick]" if args.quick else ""))
    cells = []
    for init in INITS:
        seconds = sum(s["wall_time_s"] for (label, _), s in summaries.items() if label.startswith(f"{init}-"))
        cells.append([INITS[init], *[pm(values[init, c]) if (init, c) in values else "–"
                                     for c in ("federated", "centralized", "standalone", *[f"r{r}" for r in show],
                                               "initial_dice")],
                      f"{seconds:.0f}"])
    table = console_table(["Initialization", "Federated", "Centralized", "Standalone", *[f"Θ r{r}" for r in show],
                           "before FL", "time s"], cells, title=title)
    con.print(table)
    rec.table(table)
    init_seconds: dict[str, list[float]] = {}
    for seed in args.seeds:
        seeded = load_config(CONFIG, base + [f"seed={seed}"])
        for kind in ("teacher", "pretrained", "fm"):
            meta = cache_path(seeded, kind).with_suffix(".json")
            if meta.is_file():
                init_seconds.setdefault(kind, []).append(json.loads(meta.read_text())["seconds"])
    line = (f"teacher ({cfg.fminit.teacher.name} U-Net, {cfg.fminit.teacher_samples} images, "
            f"{cfg.fminit.teacher_steps} steps) Dice {pm(values['teacher', 'dice'])} · init training s per seed: "
            + ", ".join(f"{k} {sum(v) / len(v):.0f}" for k, v in init_seconds.items())
            + f" (cached in {cache_path(cfg, 'fm').parent}) · total {time.perf_counter() - started:.0f} s")
    con.print(line, markup=False)
    rec.note(line)
    payload = {"quick": args.quick, "seeds": args.seeds, "overrides": base,
               "cells": {f"{a}/{b}": cell_stats(v) for (a, b), v in values.items()}, "init_seconds": init_seconds}
    (out / "table.json").write_text(json.dumps(payload, indent=2))
    with open(out / "table.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["init", "column", "mean", "std", "n", "values"])
        for (a, b), v in values.items():
            m, sd = mean_std(v)
            w.writerow([a, b, m, sd, len([x for x in v if x is not None]),
                        " ".join("" if x is None else f"{x:.6f}" for x in v)])
    from fedsim.plots import plot_runs

    plot_runs([out / f"{init}-cfl" / f"seed{args.seeds[0]}" for init in INITS], out / "convergence.png",
              [f"FedAvg from {INITS[init]} (seed {args.seeds[0]})" for init in INITS])
    con.print(f"cells in {out / 'table.json'} and {out / 'table.csv'}; Dice per round in {out / 'convergence.png'}")
    rec.write(payload)
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
