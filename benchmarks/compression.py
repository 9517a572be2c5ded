"""Compression benchmark: what each codec saves on the wire and in simulated network
time, and what it costs in accuracy — gossip on Gaia's RING and STAR overlays (11 silos).

For every compression kind (none, fp16, bf16, int8, top-k at 10 % and 1 %, error feedback on)
and both overlays, over the seeds: bytes per round (the coded bytes, as ``metrics/*.jsonl``
counts them), the simulated network time per round and to ``--target`` mean silo test accuracy
(MultigraphFL's delay model, compute fixed at 4.6 ms, message size M = MultigraphFL's FEMNIST model,
4,843,243 bits, times the codec's coded/raw size ratio for our model — so the network sees a
FEMNIST-size model compressed as ours is), the speed-up over the uncoded run on the same overlay,
and the final mean silo and Θ accuracy (mean ± std). On Gaia with 10 Gb/s access links a round is
mostly latency and compute, so the clock barely sees the codec; the last columns give each
overlay's cycle time λ (max cycle mean of the delay model) with the same coded message over 100 Mb/s access
links (``--slow-gbps``), where transmission dominates, and its ratio to the uncoded λ. One table,
``compression.csv`` and ``compression.png`` (accuracy against simulated time, one panel per overlay).

Every run is an ordinary ``fedsim sweep`` run folder under ``OUT/sweep`` (reused when its config
matches).

    python benchmarks/compression.py [--quick] [--seeds 0,1,2] [--rounds 15] [--target 0.6]
        [--slow-gbps 0.1] [--nproc 2] [--parallel 1] [--set KEY=VALUE ...] [--out runs/bench_compression]

36 runs of 15 rounds (11 silos, 2 ranks): about 12 minutes on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Record, add_record_args, time_to_target  # noqa: E402
from fedsim.report import SECTION, console_table, pm  # noqa: E402
from fedsim.stats import mean_std  # noqa: E402

#: the topology benchmark's small experiment (benchmarks/topologies.py; the default domain cycle,
#: not fedsim/default.yaml's four silos)
SMALL = ["data.domains=null", "data.unseen_fraction=0.0", "data.image_size=32", "data.samples_per_silo=128", "data.test_samples=256", "model.width=8",
         "train.local_steps=5", "train.lr=0.1", "train.eval_every=1", "train.eval_foundation=true"]
KINDS = [
    ("none", ["compression.kind=none"]),
    ("fp16", ["compression.kind=fp16"]),
    ("bf16", ["compression.kind=bf16"]),
    ("int8", ["compression.kind=int8"]),
    ("topk 10%", ["compression.kind=topk", "compression.ratio=0.1"]),
    ("topk 1%", ["compression.kind=topk", "compression.ratio=0.01"]),
]
OVERLAYS = ("ring", "star")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="topologies/gaia.yaml")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--target", type=float, default=0.6, help="mean silo test accuracy to reach (default 0.6)")
    p.add_argument("--slow-gbps", type=float, default=0.1,
                   help="access link of the slow-network cycle time column (Gb/s, default 0.1)")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quick", action="store_true", help="6 rounds, one seed, target 0.4 (a smoke test)")
    p.add_argument("--out", default="runs/bench_compression")
    add_record_args(p, "compression")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seeds, args.target = 6, "0", 0.4
    return args


def _ms(values: list[float], spec: str) -> str:
    return pm(*mean_std(values), spec)


def plot(curves: dict, target: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OVERLAYS), figsize=(13, 4.8), sharey=True)
    for ax, overlay in zip(axes, OVERLAYS):
        for n, (kind, _) in enumerate(KINDS):
            c = curves.get((overlay, kind))
            if not c:
                continue
            ax.plot([t / 1e3 for t in c["sim_ms"]], c["acc"], marker=".", color=f"C{n}", label=kind)
        ax.axhline(target, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("simulated network time (s, log)")
        ax.set_title(f"{overlay.upper()}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean silo test accuracy (mean over seeds)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rec = Record.from_args(args, "compression", __file__, argv, variant="quick" if args.quick else "")
    from rich.console import Console

    from fedsim.netmodel import (
        FEMNIST_COMPUTE_MS,
        FEMNIST_MODEL_BITS,
        DelayModel,
        build_overlays,
        connectivity_graph,
        overlay_cycle_time,
    )
    from fedsim.sweep import Point, collect, execute, parse_seeds, plan
    from fedsim.topology import resolve_topology

    console = Console(width=170)
    started = time.perf_counter()
    out = Path(args.out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    underlay = resolve_topology(args.network)
    delay = DelayModel(model_bits=FEMNIST_MODEL_BITS, compute_ms=FEMNIST_COMPUTE_MS)
    overlays = build_overlays(connectivity_graph(underlay, delay), list(OVERLAYS))
    paths = {k: overlays[k].to_topology().save(out / "overlays" / f"{k}.yaml") for k in OVERLAYS}
    common = ["algorithm=gossip", "scenario=dfl", "compare_with=[]", "downstream.enabled=false", "device=cpu",
              f"rounds={args.rounds}", f"net.compute_ms={FEMNIST_COMPUTE_MS}", f"net.model_bits={FEMNIST_MODEL_BITS}",
              *SMALL, *args.overrides]
    pts = [Point(f"{ov} {kind}", [f"topology={paths[ov]}", *ovr], f"{ov}-{kind.replace(' ', '').replace('%', 'pc')}")
           for ov in OVERLAYS for kind, ovr in KINDS]
    seeds = parse_seeds(args.seeds)
    runs = plan(None, common, pts, seeds, out / "sweep", args.nproc)
    execute(runs, args.parallel, log=console.print)
    rows = {r["point"]: r for r in collect(runs)}

    slow = f"λ ms at {args.slow_gbps * 1e3:g} Mb/s"
    columns = ["overlay", "compression", "KB/round", "coded/raw", "sim ms/round", "time to target s",
               "reached", "speed-up vs none", "final silo acc", "final Θ acc", slow, "λ vs none"]
    report, curves, cells = [], {}, []
    for ov in OVERLAYS:
        base_tt = None
        for kind, _ in KINDS:
            row = rows[f"{ov} {kind}"]
            sums = [json.loads((Path(v["run_dir"]) / "summary.json").read_text()) for v in row["seeds"].values()]
            kb = [s["bytes_per_round"] / 1e3 for s in sums]
            per_round = [s["sim_time_ms"][-1] / len(s["sim_time_ms"]) for s in sums]
            tts = [time_to_target(s["accuracy_by_round"], s["sim_time_ms"], args.target) for s in sums]
            reached = [t for t in tts if t is not None]
            final = [s["accuracy_by_round"][-1] for s in sums]
            theta = [s["foundation_accuracy"] for s in sums]
            if kind == "none":
                base_kb, base_tt = mean(kb), (mean(reached) if len(reached) == len(sums) else None)
            ratio = mean(kb) / base_kb
            # the same overlay and the same coded message over slow access links (delay model only)
            slow_model = DelayModel(model_bits=FEMNIST_MODEL_BITS * ratio, compute_ms=FEMNIST_COMPUTE_MS,
                                    access_gbps=args.slow_gbps)
            lam = overlay_cycle_time(connectivity_graph(underlay, slow_model), overlays[ov].arcs)
            if kind == "none":
                base_lam = lam
            tt = mean(reached) if len(reached) == len(sums) else None
            speed = base_tt / tt if (base_tt and tt) else None
            curves[(ov, kind)] = {"sim_ms": sums[0]["sim_time_ms"],
                                  "acc": [mean(a) for a in zip(*[s["accuracy_by_round"] for s in sums])]}
            cells.append([ov.upper(), kind, _ms(kb, ".1f"), f"{ratio:.3f}", _ms(per_round, ".1f"),
                          _ms(reached, ".3f") if len(reached) == len(sums) else "—", f"{len(reached)}/{len(sums)}",
                          "—" if speed is None else f"{speed:.2f}×", _ms(final, ".3f"), _ms(theta, ".3f"),
                          f"{lam:.1f}", f"{lam / base_lam:.3f}"])
            report.append({"overlay": ov, "compression": kind, "kb_per_round": kb, "coded_over_raw": ratio,
                           "sim_ms_per_round": per_round, "time_to_target_s": tts, "speedup_vs_none": speed,
                           "final_silo_accuracy": final, "final_theta_accuracy": theta,
                           "slow_cycle_time_ms": lam, "slow_cycle_time_vs_none": lam / base_lam})
        cells.append(SECTION)
    table = console_table(columns, cells, justify=["left", "left", *["right"] * (len(columns) - 2)],
                          title=f"gossip on {underlay.name} ({underlay.num_silos} silos), {args.rounds} rounds: coded "
                                f"bytes, simulated time to {args.target:.0%} mean silo accuracy (M = FEMNIST × "
                                f"coded/raw), accuracy — mean ± std over {len(seeds)} seeds")
    console.print(table)
    rec.table(table)
    with open(out / "compression.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["overlay", "compression", "kb_per_round_mean", "coded_over_raw", "sim_ms_per_round_mean",
                    "time_to_target_s_mean", "seeds_reaching_target", "speedup_vs_none", "final_silo_acc_mean",
                    "final_silo_acc_std", "final_theta_acc_mean", "final_theta_acc_std", "slow_cycle_time_ms",
                    "slow_cycle_time_vs_none"])
        for r in report:
            reached = [t for t in r["time_to_target_s"] if t is not None]
            fs, ft = r["final_silo_accuracy"], r["final_theta_accuracy"]
            w.writerow([r["overlay"], r["compression"], mean(r["kb_per_round"]), r["coded_over_raw"],
                        mean(r["sim_ms_per_round"]),
                        mean(reached) if len(reached) == len(r["time_to_target_s"]) else "",
                        len(reached), r["speedup_vs_none"] or "", *mean_std(fs), *mean_std(ft), r["slow_cycle_time_ms"],
                        r["slow_cycle_time_vs_none"]])
    (out / "compression.json").write_text(json.dumps(report, indent=2, default=str))
    plot(curves, args.target, out / "compression.png",
         f"gossip on {underlay.name}: accuracy vs simulated time per compression kind")
    missed = [f"{r['overlay']} {r['compression']}" for r in report if None in r["time_to_target_s"]]
    if missed:
        console.print(f"[yellow]target {args.target:g} not reached by every seed: {', '.join(missed)}")
        rec.note(f"target {args.target:g} not reached by every seed: {', '.join(missed)}")
    rec.write(report, figures={"compression.png": lambda path: plot(
        curves, args.target, path, f"gossip on {underlay.name}: accuracy vs simulated time per compression kind")})
    console.print(f"total {time.perf_counter() - started:.0f} s · {out}/compression.csv, compression.png, sweep/")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
