"""Faults benchmark: what dropped silos and a straggler cost the default FedEFM and FedAvg jobs.

The embedded default (``fedsim/default.yaml``: FedEFM on ring-4 with unseen domains and labels,
FedAvg on the same data; downstream off) under four fault settings:

* ``none``          — every silo in every round;
* ``drop 10%``      — each silo sits a round out with probability 0.1 (``faults.participation=0.9``,
                      ``faults.sampling=bernoulli``: 10% of the silos dropped per round on average);
* ``drop 30%``      — the same with probability 0.3;
* ``straggler 4x``  — silo 0 computes 4× slower in the simulated clock (everyone takes part).

For each, mean ± std over the seeds (``fedsim.sweep``: plan → execute → collect): final Θ test
accuracy, silo-rounds taken part, simulated time to a target Θ accuracy (the first evaluated
round at or above ``--target``; runs that never reach it are counted) and its ratio to ``none``
for the same algorithm, all measured in this run. The simulated clock uses a fixed compute time
per round (``net.compute_ms``, default 100 ms) so the times do not depend on this machine's load.
A PNG plots Θ accuracy against simulated time (mean over seeds, ± std band).

    python benchmarks/faults.py [--seeds 0,1,2] [--rounds 10] [--target 0.4] [--nproc 2]
        [--quick] [--set KEY=VALUE ...] [--out runs/bench_faults]

Writes ``OUT/faults.csv``, ``OUT/faults.json`` and ``OUT/accuracy_vs_sim_time.png``; the runs
are ``fedsim sweep`` folders under ``OUT/sweep`` (reused when their config matches).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Record, add_record_args, time_to_target  # noqa: E402
from fedsim.report import console_table  # noqa: E402
from fedsim.report import pm as fmt  # noqa: E402
from fedsim.stats import mean_std  # noqa: E402

POINTS = [
    ("none", []),
    ("drop 10%", ["faults.participation=0.9", "faults.sampling=bernoulli"]),
    ("drop 30%", ["faults.participation=0.7", "faults.sampling=bernoulli"]),
    ("straggler 4x", ["faults.stragglers=[{silo: 0, factor: 4}]"]),
]
QUICK = ["data.samples_per_silo=128", "data.test_samples=256", "data.image_size=32", "emd.grid=4"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="experiment seeds (default 0,1,2)")
    p.add_argument("--rounds", type=int, default=10, help="rounds per run (default 10, the default job's)")
    p.add_argument("--target", type=float, default=0.4, help="target Θ test accuracy (default 0.4)")
    p.add_argument("--compute-ms", type=float, default=100.0, help="simulated compute per silo per round (ms)")
    p.add_argument("--nproc", type=int, default=2, help="gloo ranks per run (default 2)")
    p.add_argument("--parallel", type=int, default=1, help="process groups at a time (default 1)")
    p.add_argument("--quick", action="store_true",
                   help=f"smaller data and images ({' '.join(QUICK)}): ~4x less compute")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every run")
    p.add_argument("--out", default="runs/bench_faults", help="output folder (default runs/bench_faults)")
    add_record_args(p, "faults")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from fedsim.sweep import Point, collect, execute, parse_seeds, plan, slug

    args = parse_args(argv)
    rec = Record.from_args(args, "faults", __file__, argv, variant="quick" if args.quick else "")
    out = Path(args.out)
    seeds = parse_seeds(args.seeds)
    common = ["downstream.enabled=false", f"rounds={args.rounds}", f"net.compute_ms={args.compute_ms}",
              "train.eval_every=1", *(QUICK if args.quick else []), *args.overrides]
    points = [Point(label, overrides, slug(label.replace("%", "pct").replace(" ", "_"))) for label, overrides in POINTS]
    started = time.perf_counter()
    runs = plan(None, common, points, seeds, out / "sweep", args.nproc)
    execute(runs, args.parallel, log=lambda s: print(s, flush=True))
    rows = collect(runs)

    table: list[dict[str, Any]] = []
    for row in rows:
        per_seed = []
        for seed, entry in sorted(row["seeds"].items()):
            summary = json.loads((Path(entry["run_dir"]) / "summary.json").read_text())
            taken = summary["participation"]["rounds_taken_part"]
            per_seed.append({
                "seed": seed, "theta": summary["foundation_accuracy"],
                "t_target": time_to_target(summary["foundation_accuracy_by_round"], summary["sim_time_ms"], args.target),
                "sim_s": summary["sim_time_ms"][-1] / 1e3,
                "taken": sum(taken.values()) / (len(taken) * len(summary["sim_time_ms"])),
                "theta_by_round": summary["foundation_accuracy_by_round"],
                "sim_ms_by_round": summary["sim_time_ms"],
            })
        table.append({"point": row["point"], "model": row["label"], "seeds": per_seed})
    base = {r["model"]: mean_std([s["t_target"] for s in r["seeds"]])[0] for r in table if r["point"] == "none"}

    from fedsim.ui import console

    cells, csv_rows = [], []
    for r in table:
        s = r["seeds"]
        theta, taken = mean_std([x["theta"] for x in s]), mean_std([x["taken"] for x in s])
        tt, total = mean_std([x["t_target"] for x in s]), mean_std([x["sim_s"] for x in s])
        reached = sum(x["t_target"] is not None for x in s)
        ratio = tt[0] / base[r["model"]] if tt[0] is not None and base.get(r["model"]) else None
        cells.append([r["point"], r["model"], fmt(*theta), fmt(*taken, ".2f"), fmt(*tt, ".2f"), f"{reached}/{len(s)}",
                      "–" if ratio is None else f"{ratio:.2f}×", fmt(*total, ".2f")])
        csv_rows.append([r["point"], r["model"], *theta, *taken, *tt, reached, len(s), ratio, *total])
    t = console_table(["faults", "model", "Θ acc", "silo-rounds in", f"sim s to Θ ≥ {args.target:g}", "reached",
                       "vs none", "sim s total"], cells, justify=["left", "left", *["right"] * 6],
                      title=f"Faults on the default jobs: {args.rounds} rounds, ring-4, seeds {args.seeds}, "
                            f"{args.compute_ms:g} ms simulated compute per round{' (--quick)' if args.quick else ''}")
    console().print(t)
    note = ("time to target: mean over the seeds that reached it; 'vs none' divides it by the same algorithm's "
            "fault-free time measured in this run")
    print(note)
    rec.table(t)
    rec.note(note)

    import csv

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "faults.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["faults", "model", "theta_mean", "theta_std", "taken_mean", "taken_std", "t_target_s_mean",
                    "t_target_s_std", "reached", "seeds", "t_target_vs_none", "sim_s_mean", "sim_s_std"])
        w.writerows(csv_rows)
    (out / "faults.json").write_text(json.dumps({"args": vars(args), "rows": table}, indent=2, default=str))
    plot(table, out / "accuracy_vs_sim_time.png", args.target)
    rec.write({"args": vars(args), "rows": table},
              figures={"accuracy_vs_sim_time.png": lambda path: plot(table, path, args.target)})
    print(f"total {time.perf_counter() - started:.0f} s; {out}/faults.csv, faults.json, accuracy_vs_sim_time.png")
    return 0


def plot(table: list[dict[str, Any]], path: Path, target: float) -> None:
    """Θ accuracy vs simulated time, one panel per model, one curve per fault setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in table))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        for n, r in enumerate(x for x in table if x["model"] == model):
            accs = list(zip(*[s["theta_by_round"] for s in r["seeds"]]))
            times = list(zip(*[s["sim_ms_by_round"] for s in r["seeds"]]))
            mean = [mean_std(list(a)) for a in accs]
            t = [mean_std(list(x))[0] / 1e3 for x in times]
            m = [v[0] for v in mean]
            sd = [v[1] or 0.0 for v in mean]  # one seed: no band
            ax.plot(t, m, marker="o", ms=3, color=f"C{n}", label=f"{r['point']} (n={len(r['seeds'])})")
            ax.fill_between(t, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)], color=f"C{n}", alpha=0.15)
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set_title(model)
        ax.set_xlabel("simulated time (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("Θ test accuracy (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
