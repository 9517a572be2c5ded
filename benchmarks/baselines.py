"""Baselines under heterogeneous local work: FedNova against FedAvg when stragglers stop at the
deadline with part of their local steps (``faults.past_deadline: partial``).

The embedded default's data (4 silos of different domains, half of the other silos' classes
unseen), in CFL, plain local SGD (FedNova is defined for SGD steps; without momentum, FedNova with
equal τ_i is FedAvg, so the rows differ only by the normalisation). Four fault settings, silo 0
computing 5× and silo 1 2× slower than the others in the last three:

* ``none``               — every silo takes τ = ``train.local_steps`` steps;
* ``stragglers waited``  — no deadline: everyone waits for them (τ steps each, a slower clock);
* ``stragglers cut``     — ``faults.deadline: 1``, ``past_deadline: partial``: they take part with
                           ⌊τ/5⌋ and ⌊τ/2⌋ steps, and nobody waits;
* ``stragglers dropped`` — ``faults.deadline: 1``, ``past_deadline: drop``: they are left out.

For each, FedAvg and FedNova: final Θ test accuracy (mean ± std over the seeds), gradient steps
per silo per round, simulated time (``net.compute_ms`` fixed, so times do not depend on this
machine), and FedNova's accuracy minus FedAvg's under the same faults, per seed, measured in this
run.

    python benchmarks/baselines.py [--seeds 0,1,2] [--rounds 10] [--quick] [--nproc 2]
        [--set KEY=VALUE ...] [--out runs/bench_baselines]

Writes ``OUT/baselines.csv`` and ``OUT/baselines.json``; the runs are sweep folders under
``OUT/sweep`` (reused when their config matches).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Record, add_record_args, seeds_arg, sweep_runs  # noqa: E402
from fedsim.report import console_table  # noqa: E402
from fedsim.report import pm as fmt  # noqa: E402
from fedsim.stats import mean_std  # noqa: E402

STRAGGLERS = "faults.stragglers=[{silo: 0, factor: 5}, {silo: 1, factor: 2}]"
FAULTS = [
    ("none", []),
    ("stragglers waited", [STRAGGLERS]),
    ("stragglers cut", [STRAGGLERS, "faults.deadline=1", "faults.past_deadline=partial"]),
    ("stragglers dropped", [STRAGGLERS, "faults.deadline=1", "faults.past_deadline=drop"]),
]
ALGORITHMS = ("fedavg", "fednova")
QUICK = ["data.samples_per_silo=128", "data.test_samples=256", "data.image_size=32"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=seeds_arg, default=[0, 1, 2], help="experiment seeds (default 0,1,2)")
    p.add_argument("--rounds", type=int, default=10, help="rounds per run (default 10)")
    p.add_argument("--local-steps", type=int, default=10, help="τ, local steps per round (default 10)")
    p.add_argument("--lr", type=float, default=0.2, help="local SGD step size (default 0.2)")
    p.add_argument("--momentum", type=float, default=0.0, help="local SGD momentum (default 0)")
    p.add_argument("--compute-ms", type=float, default=100.0, help="simulated compute per silo per round (ms)")
    p.add_argument("--nproc", type=int, default=2, help="gloo ranks per run (default 2)")
    p.add_argument("--quick", action="store_true", help=f"smaller data and images ({' '.join(QUICK)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every run")
    p.add_argument("--out", default="runs/bench_baselines", help="output folder (default runs/bench_baselines)")
    add_record_args(p, "baselines")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rec = Record.from_args(args, "baselines", __file__, argv, variant="quick" if args.quick else "")
    out = Path(args.out)
    common = ["compare_with=[]", "downstream.enabled=false", "scenario=cfl", f"rounds={args.rounds}",
              f"train.local_steps={args.local_steps}", "train.optimizer=sgd", f"train.lr={args.lr}",
              f"train.momentum={args.momentum}", f"net.compute_ms={args.compute_ms}", "train.eval_every=0",
              *(QUICK if args.quick else []), *args.overrides]
    points = [(f"{algo}, {fault}", [f"algorithm={algo}", *ov]) for fault, ov in FAULTS for algo in ALGORITHMS]
    started = time.perf_counter()
    summaries = sweep_runs([(key.replace(", ", "__").replace(" ", "_"), ov) for key, ov in points], common,
                           args.seeds, out / "sweep", args.nproc, log=lambda s: print(s, flush=True))

    def values(algo: str, fault: str, key: str) -> list[float]:
        folder = f"{algo}__{fault.replace(' ', '_')}"
        return [summaries[(folder, s)][key] for s in args.seeds]


    from fedsim.ui import console

    rows: list[dict[str, Any]] = []
    cells = []
    for fault, _ in FAULTS:
        base = values("fedavg", fault, "foundation_accuracy")
        for algo in ALGORITHMS:
            acc = values(algo, fault, "foundation_accuracy")
            gain = [a - b for a, b in zip(acc, base)] if algo == "fednova" else None
            sim = [x[-1] / 1e3 for x in values(algo, fault, "sim_time_ms")]
            row = {"faults": fault, "algorithm": algo, "theta": mean_std(acc), "gain": mean_std(gain) if gain else None,
                   "grad_steps": mean_std(values(algo, fault, "grad_steps_per_round")), "sim_s": mean_std(sim), "per_seed": acc}
            rows.append(row)
            cells.append([fault, algo, fmt(*row["theta"]), fmt(*row["gain"], sign="+") if gain else "–",
                          fmt(*row["grad_steps"], ".2f"), fmt(*row["sim_s"], ".2f")])
    t = console_table(["faults", "algorithm", "Θ acc", "FedNova − FedAvg", "grad steps / silo / round", "sim s"], cells,
                      justify=["left", "left", *["right"] * 4],
                      title=f"FedNova vs FedAvg with stragglers: CFL, 4 silos (domains), {args.rounds} rounds, τ = "
                            f"{args.local_steps}, SGD {args.lr:g} (momentum {args.momentum:g}), seeds "
                            f"{','.join(map(str, args.seeds))}{' (--quick)' if args.quick else ''}")
    console().print(t)
    note = ("Θ acc: final foundation test accuracy, mean ± std over the seeds; FedNova − FedAvg: the same seed's "
            "difference under the same faults")
    print(note)
    rec.table(t)
    rec.note(note)

    import csv

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "baselines.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["faults", "algorithm", "theta_mean", "theta_std", "gain_mean", "gain_std", "grad_steps_mean",
                    "sim_s_mean"])
        for r in rows:
            w.writerow([r["faults"], r["algorithm"], *r["theta"], *(r["gain"] or (None, None)), r["grad_steps"][0],
                        r["sim_s"][0]])
    (out / "baselines.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    path = rec.write({"args": vars(args), "rows": rows})
    if path:
        print(f"record: {path}")
    print(f"total {time.perf_counter() - started:.0f} s; {out}/baselines.csv, baselines.json")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
