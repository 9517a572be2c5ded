"""Scale benchmark: the 87-silo Ebone network on a 2-core machine (many silos per rank).

Trains gossip for a few rounds with a small data/model config and prints one table: silos,
ranks, rounds per second, peak RSS per rank (``resource.getrusage`` inside each rank), memory per
silo (peak RSS minus the rank's RSS before any silo existed, divided by its silos), bytes sent per
round and simulated network time per round.

By default silos train on the Ebone *underlay* itself (161 links, degrees 1–11): every physical
link is an exchange, so it is the heavier case for memory, messages and bytes; ``--graph ring``
trains on the RING overlay instead (a directed Christofides tour: 87 arcs, in/out-degree 1),
the overlay MultigraphFL's RING row describes.

    python benchmarks/scale.py [--network topologies/ebone.yaml] [--graph underlay|ring]
        [--rounds 3] [--nproc 2] [--out runs/bench_scale]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SMALL = [
    "data.image_size=16", "data.samples_per_silo=32", "data.test_samples=64",
    "model.width=4", "train.local_steps=1", "train.batch_size=16", "train.eval_every=0",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="topologies/ebone.yaml", help="network underlay (default Ebone, 87 silos)")
    p.add_argument("--graph", default="underlay", choices=("underlay", "ring"),
                   help="train on the underlay itself (default) or on its RING overlay")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    p.add_argument("--compute-ms", type=float, default=4.6, help="fixed compute time for the simulated clock")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override, e.g. --set model.width=8")
    p.add_argument("--out", default="runs/bench_scale", help="output folder (default runs/bench_scale)")
    return p.parse_args(argv)


def _rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def measured_rank(ctx, plan):
    """run_rank with memory accounting: RSS before any silo is built, peak RSS after the run."""
    import fedsim.data  # noqa: F401 - imported before the baseline so it only counts silos
    import fedsim.models  # noqa: F401
    from fedsim.distributed import gather_objects
    from fedsim.trainer import run_rank

    base = _current_rss_mb()
    t0 = time.perf_counter()
    summary = run_rank(ctx, plan)
    wall = time.perf_counter() - t0
    mine = len(plan.placement.silos_on(ctx.rank))
    info = {"rank": ctx.rank, "silos": mine, "base_mb": base, "peak_mb": _rss_mb(), "run_s": wall}
    gathered = gather_objects(info)
    return (summary, gathered) if ctx.rank == 0 else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from fedsim.config import load_config
    from fedsim.launch import spawn
    from fedsim.plan import build_plan
    from fedsim.topology import resolve_topology

    console = Console(width=150)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    underlay = resolve_topology(args.network)
    topology = args.network
    if args.graph == "ring":
        from fedsim.netmodel import DelayModel, build_overlay, connectivity_graph
        from fedsim.netmodel.runclock import config_model_bits

        probe = load_config(None, SMALL + args.overrides)
        bits = config_model_bits(probe)
        conn = connectivity_graph(underlay, DelayModel(model_bits=bits, compute_ms=args.compute_ms))
        topology = str(build_overlay(conn, "ring").to_topology().save(out / "ring.yaml"))
    cfg = load_config(None, [
        "algorithm=gossip", f"topology={topology}", f"rounds={args.rounds}", f"output_dir={out}",
        f"name={args.graph}", "device=cpu", f"net.compute_ms={args.compute_ms}", *SMALL, *args.overrides,
    ])
    cfg.scenario = "dfl"
    run_dir = out / cfg.name
    shutil.rmtree(run_dir, ignore_errors=True)  # only this benchmark's own run folder
    run_dir.mkdir(parents=True, exist_ok=True)
    trained = resolve_topology(cfg.topology)
    console.print(f"gossip on {underlay.name} {args.graph} ({trained.num_silos} silos, {len(trained.arcs)} arcs), "
                  f"{args.rounds} rounds on {args.nproc} ranks")
    t0 = time.perf_counter()
    summary, ranks = spawn(measured_rank, args.nproc, build_plan(cfg, run_dir, args.nproc), timeout_s=600)[0]
    total = time.perf_counter() - t0

    import json

    last = [json.loads(ln) for ln in (run_dir / "metrics" / "silo_0.jsonl").read_text().splitlines()][-1]
    loop_s = last["wall_time_s"]  # from the first round's start to the last round's record
    train_s = sum(summary["round_time_s"])
    sims = summary["sim_time_ms"]
    table = Table(title=f"gossip on {underlay.name} ({args.graph}): {trained.num_silos} silos, {args.nproc} ranks, "
                        f"{args.rounds} rounds")
    for col in ("silos", "ranks", "arcs", "rounds/s", "rounds/s (train+exchange)", "peak RSS per rank MB",
                "RSS before silos MB", "memory per silo MB", "MB per round", "sim ms/round"):
        table.add_column(col, justify="right")
    per_silo = sum(r["peak_mb"] - r["base_mb"] for r in ranks) / sum(r["silos"] for r in ranks)
    table.add_row(
        str(trained.num_silos), str(args.nproc), str(len(trained.arcs)),
        f"{args.rounds / loop_s:.2f}", f"{args.rounds / train_s:.2f}",
        " / ".join(f"{r['peak_mb']:.0f}" for r in ranks),
        " / ".join(f"{r['base_mb']:.0f}" for r in ranks),
        f"{per_silo:.2f}", f"{summary['bytes_per_round'] / 1e6:.2f}",
        f"{sims[-1] / len(sims):.1f}",
    )
    console.print(table)
    run_s = " / ".join(f"{r['run_s']:.1f}" for r in ranks)
    console.print(f"silos per rank {' / '.join(str(r['silos']) for r in ranks)}; run_rank {run_s} s "
                  f"(setup, rounds, Θ); spawn total {total:.1f} s; "
                  f"foundation Θ accuracy after {args.rounds} rounds {summary['foundation_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
