"""Topology benchmark: which overlay of a real network reaches a target accuracy first?

For one network underlay (default Gaia, 11 silos):

(a) the cycle-time table of every overlay (``fedsim.netmodel``), with MultigraphFL's FEMNIST
    constants and with this experiment's constants (the trained model's bit count, a fixed
    compute time);
(b) the same algorithm (gossip by default, or fedefm) trained on each chosen overlay with the
    same seed and data, silos placed on ``--nproc`` ranks; every run records the simulated
    network clock (max-plus recursion over the overlay's arc delays, ``net.compute_ms`` fixed so
    it is deterministic) beside the mean silo test accuracy; a PNG plots accuracy against
    simulated time, one curve per overlay;
(c) the table of simulated time to reach ``--target`` accuracy and the speed-up over STAR (the
    form of Marfoq et al.'s results), all ratios measured in this run.

STAR for gossip is the star overlay *graph* (gossip between the hub and its leaves); its
simulated round is the max-plus round of that graph, not the server-based
2·(λ − T_c) + T_c of the cycle-time table (which models a FedAvg round: upload, then download).

    python benchmarks/topologies.py [--network topologies/gaia.yaml] [--overlays star,mst,ring,multigraph]
        [--algorithm gossip|fedefm] [--rounds R] [--target ACC] [--nproc 2] [--quick] [--out DIR]

Writes to ``--out`` (default ``runs/bench_topologies/``): ``cycle_times.csv``, ``curves.csv``
(overlay, round, sim_time_ms, accuracy, wall_time_s), ``time_to_target.csv``,
``accuracy_vs_sim_time.png``, the trained overlays as ``overlays/<kind>.yaml`` and each run
under ``runs/<kind>/``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Record, add_record_args  # noqa: E402
from fedsim.netmodel import OVERLAY_KINDS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OVERLAYS = "star,mst,ring,multigraph"
# A small, fast experiment: every overlay trains on the same data from the same seed.
SMALL = [
    "data.image_size=32", "data.samples_per_silo=128", "data.test_samples=256",
    "model.width=8", "train.local_steps=5", "train.lr=0.1", "train.eval_every=1",
]
DEFAULTS = {"rounds": 20, "target": 0.6}
QUICK = {"rounds": 10, "target": 0.5, "overlays": "star,ring,multigraph"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="topologies/gaia.yaml", help="network underlay with distance_km (YAML/GML)")
    p.add_argument("--algorithm", default="gossip", choices=("gossip", "fedefm"))
    p.add_argument("--overlays", default=None,
                   help=f"comma-separated subset of {','.join((*OVERLAY_KINDS, 'complete'))} "
                        f"(default {DEFAULT_OVERLAYS}; --quick {QUICK['overlays']})")
    p.add_argument("--rounds", type=int, default=None, help=f"rounds per overlay (default {DEFAULTS['rounds']}, "
                   f"--quick {QUICK['rounds']})")
    p.add_argument("--target", type=float, default=None, help=f"target mean silo test accuracy (default "
                   f"{DEFAULTS['target']}, --quick {QUICK['target']})")
    p.add_argument("--nproc", type=int, default=2, help="ranks the silos are placed on (default 2)")
    p.add_argument("--compute-ms", type=float, default=4.6,
                   help="fixed local compute time per round in the delay model (default 4.6 ms, as MultigraphFL)")
    p.add_argument("--access-gbps", type=float, default=10.0, help="silo access link capacity (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run, e.g. --set train.lr=0.1")
    p.add_argument("--quick", action="store_true", help="3 overlays, 10 rounds (about a minute on 2 idle cores)")
    p.add_argument("--out", default="runs/bench_topologies", help="output folder (default runs/bench_topologies)")
    add_record_args(p, "topologies")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    args.overlays = args.overlays or preset.get("overlays", DEFAULT_OVERLAYS)
    args.kinds = [k.strip().lower() for k in args.overlays.split(",") if k.strip()]
    bad = [k for k in args.kinds if k not in (*OVERLAY_KINDS, "complete")]
    if bad or not args.kinds:
        p.error(f"--overlays: unknown {', '.join(bad) or '(none)'}; choose from {','.join((*OVERLAY_KINDS, 'complete'))}")
    args.rounds = args.rounds if args.rounds is not None else preset["rounds"]
    args.target = args.target if args.target is not None else preset["target"]
    # 32-px images leave a 4x4 feature map for FedEFM's EMD (its default grid is 5x5).
    algo = ["emd.grid=4"] if args.algorithm == "fedefm" else []
    args.base_overrides = SMALL + algo + list(preset.get("overrides", [])) + list(args.overrides)
    return args


def experiment_config(args, topology: str, name: str, out: Path):
    from fedsim.config import load_config

    cfg = load_config(None, [
        f"algorithm={args.algorithm}", f"topology={topology}", f"rounds={args.rounds}", f"seed={args.seed}",
        f"output_dir={out}", f"name={name}", "device=cpu",
        f"net.compute_ms={args.compute_ms}", f"net.access_gbps={args.access_gbps}",
        "compare_with=[]", "downstream.enabled=false",  # the overlay's own run only
        *args.base_overrides,
    ])
    cfg.scenario = "dfl"
    return cfg


def time_to_target(acc: list[float | None], sim_ms: list[float], target: float) -> tuple[int | None, float | None]:
    """(first round index reaching the target, simulated ms at the end of that round)."""
    for k, a in enumerate(acc):
        if a is not None and a >= target:
            return k, sim_ms[k]
    return None, None


def per_round_ms(sim_ms: list[float]) -> float:
    """Mean simulated time per round over the run (the slowest silo's clock / rounds)."""
    return sim_ms[-1] / len(sim_ms) if sim_ms else float("nan")


def plot(curves: dict[str, dict[str, list]], target: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind, c in curves.items():
        pts = [(t / 1e3, a) for t, a in zip(c["sim_time_ms"], c["accuracy"], strict=True) if a is not None]
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=kind)
        axes[1].plot(range(1, len(c["accuracy"]) + 1), c["accuracy"], marker=".", label=kind)
    for ax in axes:
        ax.axhline(target, color="grey", ls="--", lw=0.8)
        ax.set_ylabel("mean silo test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_xscale("log")
    axes[0].set_xlabel("simulated network time (s, log scale)")
    axes[0].set_title("accuracy vs simulated time")
    axes[1].set_xlabel("round")
    axes[1].set_title("accuracy vs round")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rec = Record.from_args(args, "topologies", __file__, argv, variant="quick" if args.quick else "")
    from rich.console import Console

    from fedsim.experiment import finish, launch_together, prepare
    from fedsim.netmodel import (
        FEMNIST_COMPUTE_MS,
        FEMNIST_MODEL_BITS,
        DelayModel,
        build_overlays,
        connectivity_graph,
        cycle_times,
    )
    from fedsim.netmodel.runclock import config_model_bits
    from fedsim.report import console_table
    from fedsim.topology import resolve_topology

    console = Console(width=150)
    started = time.perf_counter()
    out = Path(args.out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    underlay = resolve_topology(args.network)
    probe = experiment_config(args, args.network, "probe", out)
    bits = config_model_bits(probe)
    model = DelayModel(model_bits=bits, compute_ms=args.compute_ms, access_gbps=args.access_gbps)

    # (a) cycle times: every overlay kind, FEMNIST constants and this experiment's constants.
    femnist = cycle_times(underlay, DelayModel(model_bits=FEMNIST_MODEL_BITS, compute_ms=FEMNIST_COMPUTE_MS,
                                               access_gbps=args.access_gbps))
    table_kinds = list(dict.fromkeys([*OVERLAY_KINDS, *args.kinds]))
    overlays = build_overlays(connectivity_graph(underlay, model), table_kinds)
    ours = {k: o.cycle_time_ms for k, o in overlays.items()}
    cells = []
    with open(out / "cycle_times.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["overlay", "cycle_time_ms_femnist", "cycle_time_ms_experiment"])
        for k in table_kinds:
            f = femnist.get(k)
            w.writerow([k, "" if f is None else f"{f:.6f}", f"{ours[k]:.6f}"])
            cells.append([k, "" if f is None else f"{f:.1f}", f"{ours[k]:.1f}", "✓" if k in args.kinds else ""])
    t = console_table(["overlay", f"FEMNIST (M={FEMNIST_MODEL_BITS:,}, T_c={FEMNIST_COMPUTE_MS:g}) ms",
                       f"this model (M={bits:,.0f}, T_c={args.compute_ms:g}) ms", "trained"], cells,
                      title=f"(a) cycle time on {underlay.name} ({underlay.num_silos} silos)",
                      justify=["left", "right", "right", "center"])
    console.print(t)
    rec.table(t)

    # (b) train on each overlay, all in one process group (one start of the ranks for them all).
    jobs = []
    for kind in args.kinds:
        path = overlays[kind].to_topology().save(out / "overlays" / f"{kind}.yaml")
        cfg = experiment_config(args, str(path), kind, out / "runs")
        run_dir = out / "runs" / kind
        shutil.rmtree(run_dir, ignore_errors=True)  # this benchmark's own previous run of the overlay
        jobs.append(prepare(cfg, nproc=args.nproc, run_dir=run_dir))
    console.print(f"training {args.algorithm} on {', '.join(args.kinds)}: {args.rounds} rounds, "
                  f"{underlay.num_silos} silos on {args.nproc} ranks, model {bits / 8e6:.2f} MB, "
                  f"compute {args.compute_ms:g} ms")
    t_train = time.perf_counter()
    summaries = [finish(result).summary for result in launch_together(jobs)]
    train_s = time.perf_counter() - t_train

    curves = {}
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["overlay", "round", "sim_time_ms", "accuracy", "round_time_s"])
        for kind, s in zip(args.kinds, summaries, strict=True):
            curves[kind] = {"sim_time_ms": s["sim_time_ms"], "accuracy": s["accuracy_by_round"]}
            for k, (tm, acc, rt) in enumerate(zip(s["sim_time_ms"], s["accuracy_by_round"], s["round_time_s"],
                                                  strict=True)):
                w.writerow([kind, k + 1, f"{tm:.6f}", "" if acc is None else f"{acc:.6f}", f"{rt:.4f}"])
    png = out / "accuracy_vs_sim_time.png"
    plot(curves, args.target, f"{args.algorithm} on {underlay.name} overlays ({underlay.num_silos} silos, "
         f"{args.rounds} rounds, target {args.target:g})", png)

    # (c) time to target and speed-up vs STAR.
    rows = []
    for kind, s in zip(args.kinds, summaries, strict=True):
        k, tm = time_to_target(s["accuracy_by_round"], s["sim_time_ms"], args.target)
        rows.append({"overlay": kind, "cycle_time_ms": ours[kind], "sim_ms_per_round": per_round_ms(s["sim_time_ms"]),
                     "rounds_to_target": None if k is None else k + 1, "time_to_target_s": None if tm is None else tm / 1e3,
                     # the run in its rank: start-up (data, silos) and the rounds
                     "final_accuracy": s["accuracy_by_round"][-1], "wall_s": s["setup_s"] + s["wall_time_s"]})
    base = next((r for r in rows if r["overlay"] == "star"), None)
    for r in rows:
        ok = base is not None and base["time_to_target_s"] and r["time_to_target_s"]
        r["speedup_vs_star"] = base["time_to_target_s"] / r["time_to_target_s"] if ok else None
        r["round_time_ratio_vs_star"] = (base["sim_ms_per_round"] / r["sim_ms_per_round"]) if base else None
    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    t = console_table(["overlay", "cycle time ms", "sim ms/round", "rounds to target", "time to target s",
                       "speed-up vs STAR", "sim round vs STAR", "final acc", "wall s"],
                      [[r["overlay"], f"{r['cycle_time_ms']:.1f}", f"{r['sim_ms_per_round']:.1f}",
                        fmt(r["rounds_to_target"], "d"), fmt(r["time_to_target_s"], ".3f"),
                        fmt(r["speedup_vs_star"], ".2f") + ("×" if r["speedup_vs_star"] else ""),
                        fmt(r["round_time_ratio_vs_star"], ".2f") + ("×" if r["round_time_ratio_vs_star"] else ""),
                        f"{r['final_accuracy']:.3f}", f"{r['wall_s']:.1f}"] for r in rows],
                      title=f"(c) {args.algorithm} on {underlay.name}: simulated time to {args.target:.0%} mean silo "
                            "accuracy")
    console.print(t)
    rec.table(t)
    with open(out / "time_to_target.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    missed = [r["overlay"] for r in rows if r["rounds_to_target"] is None]
    if missed:
        line = (f"target {args.target:g} not reached in {args.rounds} rounds by: {', '.join(missed)} "
                "(lower --target or raise --rounds)")
        console.print(f"[yellow]{line}")
        rec.note(line)
    rec.write({"cycle_time_ms": {"femnist": femnist, "experiment": ours}, "rows": rows},
              figures={"accuracy_vs_sim_time.png": lambda path: plot(
                  curves, args.target, f"{args.algorithm} on {underlay.name} overlays ({underlay.num_silos} silos, "
                  f"{args.rounds} rounds, target {args.target:g})", path)})
    console.print(f"training {train_s:.1f} s, total {time.perf_counter() - started:.1f} s · "
                  f"{png}, cycle_times.csv, curves.csv, time_to_target.csv in {out}/")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
