"""Privacy benchmark: what DP-SGD costs FedAvg and FedEFM in accuracy and in time.

Θ test accuracy of FedEFM (DFL) and FedAvg (CFL) trained with sample-level DP-SGD per silo
(``privacy.mode: sample``, Opacus, Poisson sampling, clip C = ``--clip``) at ε ∈ {∞, 8, 4, 1},
δ = 1e-5 — σ found by Opacus for each algorithm's own number of steps per silo (FedEFM's silos
spend their budget on their own steps, the visitors they host and their distillation) — mean ±
std over the seeds, the ε actually spent (the largest over silos, Opacus' RDP accountant), and
the wall-time overhead of DP-SGD per round: the mean round time of each private run over the
non-private run of the same algorithm and seed, measured in this invocation.

Every run is an ordinary ``fedsim sweep`` run folder under ``OUT/sweep`` (finished runs are
reused when their config matches: use a new ``--out`` after changing code).

    python benchmarks/privacy.py [--quick] [--seeds 0,1,2] [--epsilons inf,8,4,1] [--nproc 2]
        [--parallel 1] [--set KEY=VALUE ...] [--out runs/bench_privacy]

The default size (``SIZE``) is reduced to fit a shared 2-core machine (24 runs, under 15 minutes
for 3 seeds); ``--full`` is the embedded default's data and model (64 px, width-16 CNN, Adam lr
1e-3, 10 rounds of 10 local / overseas / distillation steps; hours on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Record, add_record_args  # noqa: E402
from fedsim.report import pm  # noqa: E402
from fedsim.stats import mean_std  # noqa: E402

#: the reduced size: the default run's data (4 silos, domain mixtures, half the other silos' classes
#: unseen) with 2,048 images per silo at 32 px, a width-8 CNN, 6 rounds of the default steps, SGD
#: (momentum 0.9) lr 0.05 at batch 64 for every run, private or not. DP-SGD needs many samples per
#: silo: at 256 per silo (the default) or batch 32 every private run stayed at chance level even
#: at ε = 8 (measured while choosing this size), since the noise on a batch's mean gradient is σC/B
SIZE = ["rounds=6", "data.image_size=32", "data.samples_per_silo=2048", "data.test_samples=256", "model.width=8",
        "train.optimizer=sgd", "train.lr=0.05", "train.batch_size=64", "emd.grid=4"]
QUICK = ["rounds=3", "data.image_size=32", "data.samples_per_silo=64", "data.test_samples=128", "model.width=4",
         "train.local_steps=3", "fedefm.overseas_steps=3", "fedefm.distill_steps=3", "emd.grid=4"]
#: the embedded default (fedsim/default.yaml) with its 10 rounds
FULL = ["rounds=10"]
DELTA = 1e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epsilons", default="inf,8,4,1", help="ε targets (inf: no privacy), default inf,8,4,1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--clip", type=float, default=1.0, help="per-sample gradient bound C (privacy.max_grad_norm)")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--parallel", type=int, default=1, help="process groups at a time (sweep --parallel)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke-test size (minutes)")
    size.add_argument("--full", action="store_true", help="the embedded default's size (hours on 2 cores)")
    p.add_argument("--out", default="runs/bench_privacy")
    add_record_args(p, "privacy")
    return p.parse_args(argv)


def points(epsilons: list[float], clip: float) -> list:
    from fedsim.sweep import Point

    out = []
    for eps in epsilons:
        if math.isinf(eps):
            out.append(Point("ε=∞", ["privacy.mode=none"], "eps-inf"))
        else:
            out.append(Point(f"ε={eps:g}", ["privacy.mode=sample", f"privacy.target_epsilon={eps:g}",
                                            f"privacy.delta={DELTA:g}", f"privacy.max_grad_norm={clip:g}"],
                             f"eps-{eps:g}"))
    return out


def _summary(run_dir: str) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def _fmt(values: list[float], spec: str = ".3f") -> str:
    return pm(*mean_std(values), spec)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rec = Record.from_args(args, "privacy", __file__, argv,
                           variant="quick" if args.quick else "full" if args.full else "")
    from rich.console import Console

    from fedsim.report import console_table
    from fedsim.sweep import collect, execute, parse_seeds, plan, write_outputs

    console = Console(width=160)
    started = time.perf_counter()
    out = Path(args.out)
    size = QUICK if args.quick else FULL if args.full else SIZE
    common = ["algorithm=fedefm", "scenario=dfl", "compare_with=[fedavg]", "downstream.enabled=false",
              "train.eval_every=0", *size, *args.overrides]
    epsilons = [float(e) for e in args.epsilons.split(",")]
    seeds = parse_seeds(args.seeds)
    runs = plan(None, common, points(epsilons, args.clip), seeds, out / "sweep", args.nproc)
    execute(runs, args.parallel, log=console.print)
    rows = collect(runs)
    write_outputs(rows, out / "sweep", "Θ accuracy by round under DP-SGD")

    # per (algorithm, ε): every seed's summary; the overhead is per seed against ε = ∞
    by = {(r["label"], r["point"]): {s: _summary(v["run_dir"]) for s, v in r["seeds"].items()} for r in rows}
    cells, report = [], []
    for label in dict.fromkeys(r["label"] for r in rows):
        plain = by.get((label, "ε=∞"), {})
        for pt in points(epsilons, args.clip):
            runs_ = by[(label, pt.label)]
            acc = [s["foundation_accuracy"] for s in runs_.values()]
            per_round = {seed: mean(s["round_time_s"]) for seed, s in runs_.items()}
            ratio = [per_round[seed] / mean(plain[seed]["round_time_s"]) for seed in per_round if seed in plain]
            sigma = [s["privacy"]["noise_multiplier"] for s in runs_.values() if "privacy" in s]
            spent = [s["epsilon"] for s in runs_.values() if "epsilon" in s]
            cells.append([label, pt.label.split("=")[1], _fmt(sigma, ".2f") if sigma else "–",
                          _fmt(spent, ".2f") if spent else "–", _fmt(acc), _fmt(list(per_round.values()), ".2f"),
                          "1 (reference)" if pt.label == "ε=∞" else _fmt(ratio, ".2f")])
            report.append({"model": label, "epsilon_target": pt.label, "noise_multiplier": sigma,
                           "epsilon_spent": spent, "foundation_accuracy": acc, "round_time_s": per_round,
                           "dp_time_ratio": ratio})
    table = console_table(["model", "target ε", "σ", "ε spent (max silo)", "Θ test acc", "s/round", "DP-SGD time ×"],
                          cells, title=f"DP-SGD per silo (Opacus, Poisson sampling, C = {args.clip:g}, δ = {DELTA:g}): "
                                       f"Θ test accuracy, mean ± std over {len(seeds)} seeds")
    console.print(table)
    (out / "privacy.json").write_text(json.dumps(report, indent=2, default=str))
    rec.table(table)
    rec.write(report)
    console.print(f"total {time.perf_counter() - started:.0f} s · {out}/privacy.json, sweep/ (sweep.csv, sweep.png)")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
