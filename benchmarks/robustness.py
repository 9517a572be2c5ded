"""Robust aggregation benchmark: Θ's test accuracy under each ``aggregation:`` rule with corrupted
silos (``faults.corrupt``), for FedAvg (CFL) and gossip (DFL).

Settings: 1 corrupted silo of 4 (``topology: ring-4``; silo 1) and 2 of 11 (``topology: gaia``,
the complete Gaia graph; silos 3 and 8), each corrupted in every round by one kind of
``faults.corrupt`` — ``random_labels`` (every label drawn anew), ``label_noise`` (every label
moved to another class), ``weight_noise`` (N(0, σ²) on every weight it sends, σ = ``--noise``) —
or by none. Rules: ``mean``, ``median``, ``trimmed_mean`` (``aggregation_trim`` 1/3 on ring-4:
a gossip mix's 3 inputs lose one whole input's weight at each end; 0.2 on Gaia: 2.2 of 11 inputs'
weight at each end) and ``krum`` (``krum_f`` 0 on ring-4, where a mix has 3 inputs and Θ 4; 2 on
Gaia: as many as corrupted). Each cell is mean ± std of Θ's final test accuracy over
the seeds; the ratio column divides by the same rule without corruption, measured in this run.

Small on purpose (the whole table in ~20 minutes on 2 CPU cores): IID synthetic data
(``data.partition: iid``, 64 training images of 32×32 per silo, 256 test images), the CPU model
at width 16, 5 rounds of 5 local Adam steps (lr 0.005, batch 16); each run an experiment of
:mod:`fedsim.experiment` on one rank, in this process. Without corruption FedAvg's Θ reaches ~80% in these 5 rounds.

    python benchmarks/robustness.py [--seeds 0,1,2] [--rounds 5] [--noise 1.0] [--only ring-4]
        [--no-record | --record DIR]

Writes the dated record benchmarks/results/robustness/<date>-<commit>.md and .json
(``benchmarks.common.Record``: command, commit, machine, load average, wall time, the table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import Record, add_record_args, seeds_arg  # noqa: E402
from fedsim import experiment  # noqa: E402
from fedsim.report import pm, print_table  # noqa: E402
from fedsim.stats import mean_std  # noqa: E402

SMALL = ["data.partition=iid", "data.samples_per_silo=64", "data.test_samples=256", "data.image_size=32",
         "model.width=16", "train.local_steps=5", "train.batch_size=16", "train.lr=0.005", "train.eval_every=0",
         "downstream.enabled=false", "compare_with=[]", "checkpoint.every=1000"]
#: (label, topology, corrupted silos, aggregation_trim, krum_f): β cuts at least the corrupted share
#: of a combine's weight at each end (ring-4: a gossip mix has 3 equal inputs, so β = 1/3), Krum's f
#: is as large as the smallest combine allows (ring-4: 3 inputs, f = 0) or the corrupted count
NETWORKS = [("ring-4", "ring-4", [1], 1 / 3, 0), ("gaia", "gaia", [3, 8], 0.2, 2)]
ALGORITHMS = [("FedAvg (CFL)", "fedavg"), ("gossip (DFL)", "gossip")]
RULES = ["mean", "median", "trimmed_mean", "krum"]
CORRUPTIONS = ["none", "random_labels", "label_noise", "weight_noise"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=seeds_arg, default=[0, 1, 2], help="experiment seeds (default 0,1,2)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per run (default 5)")
    p.add_argument("--noise", type=float, default=1.0, help="σ of weight_noise (default 1.0)")
    p.add_argument("--only", choices=[n for n, *_ in NETWORKS], help="one network only")
    add_record_args(p, "robustness")
    return p.parse_args(argv)


def corruption(kind: str, silos: list[int], noise: float) -> list[str]:
    if kind == "none":
        return []
    level = noise if kind == "weight_noise" else 1.0
    entries = ", ".join(f"{{silo: {s}, kind: {kind}, level: {level}}}" for s in silos)
    return [f"faults.corrupt=[{entries}]"]


def theta_accuracy(overrides: list[str]) -> float:
    """Θ's final test accuracy of one run, on one rank in this process."""
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        result = experiment.run(None, [*overrides, "device=cpu", f"output_dir={tmp}"], nproc=1,
                                run_dir=Path(tmp) / "run")
    return result.summary["foundation_accuracy"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rec = Record.from_args(args, "robustness", __file__, argv)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    networks = [n for n in NETWORKS if args.only in (None, n[0])]
    for net, topology, silos, trim, krum_f in networks:
        for title, algorithm in ALGORITHMS:
            for rule in RULES:
                row = {"network": net, "corrupted": len(silos), "algorithm": title, "rule": rule, "cells": {}}
                for kind in CORRUPTIONS:
                    accs = []
                    for seed in args.seeds:
                        accs.append(theta_accuracy([
                            *SMALL, f"rounds={args.rounds}", f"seed={seed}", f"algorithm={algorithm}",
                            f"topology={topology}", f"aggregation={rule}", f"aggregation_trim={trim}", f"krum_f={krum_f}",
                            *corruption(kind, silos, args.noise)]))
                    m, sd = mean_std(accs)
                    row["cells"][kind] = {"mean": m, "std": sd, "values": accs}
                    print(f"{net} {title} {rule} {kind}: {pm(m, sd, '.1f', scale=100.0)}  "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)
                rows.append(row)

    def cell(c: dict[str, Any]) -> str:
        return pm(c["mean"], c["std"], ".1f", scale=100.0)

    columns = ["network (corrupted)", "algorithm", "rule", *CORRUPTIONS, "worst / none"]
    cells = []
    for r in rows:
        c = r["cells"]
        worst = min(c[k]["mean"] for k in CORRUPTIONS[1:])
        ratio = worst / c["none"]["mean"] if c["none"]["mean"] else float("nan")
        cells.append([f"{r['network']} ({r['corrupted']})", r["algorithm"], r["rule"],
                      *(cell(c[k]) for k in CORRUPTIONS), f"{ratio:.2f}"])
    title = f"Θ test accuracy (%) with corrupted silos, mean ± std over seeds {', '.join(map(str, args.seeds))}"
    print_table(columns, cells, title=title, justify=["left"] * 3 + ["right"] * (len(columns) - 3))
    rec.table(title=title, columns=columns, rows=cells)
    rec.note(f"{args.rounds} rounds; {' '.join(SMALL)}. Corrupted silos: "
             + "; ".join(f"{n}: {', '.join(map(str, s))}" for n, _, s, _, _ in networks)
             + f" (label kinds at level 1.0, weight_noise σ = {args.noise:g}); aggregation_trim "
             + ", ".join(f"{b:.3g} on {n}" for n, _, _, b, _ in networks) + "; krum_f "
             + ", ".join(f"{f} on {n}" for n, _, _, _, f in networks)
             + ". 'worst / none' divides the worst corrupted cell by the uncorrupted one of the same row.")
    path = rec.write({"seeds": args.seeds, "rounds": args.rounds, "noise": args.noise, "common": SMALL,
                      "networks": [{"label": n, "topology": t, "corrupted": s, "aggregation_trim": b, "krum_f": f}
                                   for n, t, s, b, f in networks], "rows": rows},
                     title="Robust aggregation: Θ accuracy with corrupted silos")
    if path is not None:
        print(f"wrote {path} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
