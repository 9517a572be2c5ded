"""Scale benchmark: many silos per rank on a 2-core machine (default: the 87-silo Ebone network).

Trains gossip for a few rounds and prints one table: silos, ranks, rounds per second, the time
of a round split into train / exchange / evaluate / checkpoint (the slowest rank's seconds per
round, and evaluation's share), peak RSS per rank and of the process tree (the launcher plus
every rank's peak: an upper bound, as the peaks need not coincide), memory per silo (peak RSS
minus the rank's RSS before any silo existed, divided by its silos) broken down into weights,
optimiser state, data and the rest, bytes sent per round and simulated network time per round.

By default silos train on the network *underlay* itself (every physical link is an exchange:
the heavier case for memory, messages and bytes); ``--graph ring`` trains on its RING overlay (a
directed Christofides tour). ``--network`` also takes ``KIND:N`` (``random-regular:1000``).
``--preset default`` is the default model and data (64² images, 256 per silo, 512 test images,
width-16 CNN, 10 local steps of 32); ``small`` (the default) is a tiny job that measures the
simulator's own overhead.

``--sweep 10,100,300,1000`` runs ``random-regular:N`` for each N in turn (one job at a time) and
writes ``scale_sweep.png``: seconds per round and MB per silo against silos, log–log.

The compute floor is measured in the same run, right after each job: one isolated SGD step of
the silo model (its optimiser, a silo's mini-batches, what local training does) in one process
per rank, all at once — the same contention for the cores as the job's ranks — timed over
``--floor-steps`` steps after a warm-up. The floor of a round is the busiest rank's steps
(its silos × ``train.local_steps``) at that time each, and the table gives rounds/s against the
floor's (target: 1,000 default silos at ≥ 0.9× the floor, within 8 GiB).

    python benchmarks/scale.py [--network topologies/ebone.yaml | random-regular:1000] [--graph underlay|ring]
        [--preset small|default] [--rounds 3] [--nproc 2] [--sweep 10,100,300,1000] [--floor-steps 20]
        [--out runs/bench_scale]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Record, add_record_args  # noqa: E402

SMALL = [
    "data.image_size=16", "data.samples_per_silo=32", "data.test_samples=64",
    "model.width=4", "train.local_steps=1", "train.batch_size=16", "train.eval_every=0",
]
#: the default model and data (the "default job" of the scale targets), evaluated only in the last round as SMALL
DEFAULT = [
    "data.image_size=64", "data.samples_per_silo=256", "data.test_samples=512", "model.width=16",
    "train.local_steps=10", "train.batch_size=32", "train.eval_every=0",
]
PRESETS = {"small": SMALL, "default": DEFAULT}
SPLIT = ("train_time_s", "exchange_time_s", "eval_time_s", "checkpoint_time_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="topologies/ebone.yaml",
                   help="network underlay: a file, a shipped name or KIND:N (default Ebone, 87 silos)")
    p.add_argument("--graph", default="underlay", choices=("underlay", "ring"),
                   help="train on the underlay itself (default) or on its RING overlay")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS),
                   help="small: tiny model and data (default); default: the default model and data")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    p.add_argument("--sweep", default=None, metavar="N,N,...",
                   help="run random-regular:N for each N and plot the growth (scale_sweep.png)")
    p.add_argument("--floor-steps", type=int, default=20,
                   help="timed SGD steps of the isolated-step floor, per rank (after 3 warm-up steps; 0: no floor)")
    p.add_argument("--compute-ms", type=float, default=4.6, help="fixed compute time for the simulated clock")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override, e.g. --set model.width=8")
    p.add_argument("--out", default="runs/bench_scale", help="output folder (default runs/bench_scale)")
    add_record_args(p, "scale")
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


def silo_bytes(plan, silo: int) -> dict[str, float]:
    """What one silo holds, in MB: its model's weights, its optimiser's state after a step (the
    gradients are freed after local training) and its data as the run stores it."""
    import torch

    from fedsim.data import load_federated
    from fedsim.federation import BatchStream, make_optimizer, train_steps
    from fedsim.models import build_model

    cfg = plan.cfg
    data = load_federated(cfg.data, plan.underlay.num_silos, cfg.seed, silos=[silo]).train[silo]
    data.compact(keep_masks=cfg.task == "segmentation")
    model = build_model(cfg.model, 6, data.channels)
    opt = make_optimizer(model, cfg)
    train_steps(model, opt, BatchStream(data, cfg.train.batch_size, 0, torch.device("cpu")), 1)
    size = lambda ts: sum(t.numel() * t.element_size() for t in ts) / 2**20  # noqa: E731
    state = [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    return {"weights": size(model.state_dict().values()), "optimizer": size(state), "data": data.nbytes() / 2**20}


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
    mine = plan.placement.silos_on(ctx.rank)
    info = {"rank": ctx.rank, "silos": len(mine), "base_mb": base, "peak_mb": _rss_mb(), "run_s": wall,
            "silo_mb": silo_bytes(plan, mine[0]) if ctx.rank == 0 else None}
    gathered = gather_objects(info)
    return (summary, gathered) if ctx.rank == 0 else None


FLOOR_WARMUP = 3  # steps before the timed ones: first-call allocations and kernel selection


def floor_rank(ctx, plan, steps: int) -> list[float] | None:
    """Seconds per isolated SGD step of the silo model, in every rank at once: the rank's first
    silo's model, optimiser and mini-batches, the steps local training takes
    (:func:`fedsim.federation.train_steps`), timed between two barriers so that the ranks
    contend for the cores as the job's do. Rank 0 gets every rank's time."""
    from fedsim.data import load_federated
    from fedsim.distributed import barrier, gather_objects, set_determinism
    from fedsim.federation import BatchStream, make_optimizer, train_steps
    from fedsim.models import build_model

    cfg = plan.cfg
    set_determinism(cfg.seed)
    silo = plan.placement.silos_on(ctx.rank)[0]
    fd = load_federated(cfg.data, plan.underlay.num_silos, cfg.seed, silos=[silo], compact=True)
    data = fd.train[silo]
    model = build_model(cfg.model, fd.num_classes, data.channels).to(ctx.device)
    opt = make_optimizer(model, cfg)
    stream = BatchStream(data, cfg.train.batch_size, cfg.seed, ctx.device)
    train_steps(model, opt, stream, FLOOR_WARMUP)
    barrier()
    t0 = time.perf_counter()
    train_steps(model, opt, stream, steps)
    step_s = (time.perf_counter() - t0) / steps
    barrier()
    return gather_objects(step_s)


def measure_floor(plan, nproc: int, steps: int) -> dict[str, float]:
    """The isolated-step floor of ``plan``'s job (:func:`floor_rank`): ms per step (the slowest
    rank's) and the floor's seconds per round (the busiest rank's silos × local steps × that)."""
    from fedsim.launch import spawn

    per_rank = spawn(floor_rank, nproc, plan, steps, timeout_s=3600)[0]
    step_s = max(per_rank)
    busiest = max(len(plan.placement.silos_on(r)) for r in range(nproc))
    return {"floor_ms_per_step": 1000 * step_s, "floor_ms_per_step_ranks": [1000 * s for s in per_rank],
            "floor_s_per_round": busiest * plan.cfg.train.local_steps * step_s}


def round_split(run_dir: Path) -> dict[str, float]:
    """Seconds per round of each part (the slowest rank's, averaged over the rounds) and of the
    whole round (each rank's parts added up, the slowest rank), from the per-silo records: every
    record carries its rank's split, so the distinct splits of a round are its ranks'."""
    ranks: dict[int, set[tuple[float, ...]]] = {}
    for path in (run_dir / "metrics").glob("silo_*.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            ranks.setdefault(rec["round"], set()).add(tuple(rec.get(key, 0.0) for key in SPLIT))
    n = max(len(ranks), 1)
    out = {key: sum(max(r[j] for r in splits) for splits in ranks.values()) / n for j, key in enumerate(SPLIT)}
    out["round_s"] = sum(max(sum(r) for r in splits) for splits in ranks.values()) / n
    return out


def run_one(args, network: str, console) -> dict:
    """One job on ``network``; returns its row of the table. The ranks are started here, not
    through :mod:`fedsim.experiment`: what is measured is each rank's memory (its RSS before any
    silo exists and its peak after the run, :func:`measured_rank` around ``run_rank``), which only
    a function of our own running in every rank can read."""
    from fedsim.config import load_config
    from fedsim.launch import spawn
    from fedsim.plan import build_plan
    from fedsim.topology import resolve_topology

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    underlay = resolve_topology(network)
    topology = network
    preset = PRESETS[args.preset]
    if args.graph == "ring":
        from fedsim.netmodel import DelayModel, build_overlay, connectivity_graph
        from fedsim.netmodel.runclock import config_model_bits

        probe = load_config(None, preset + args.overrides)
        bits = config_model_bits(probe)
        conn = connectivity_graph(underlay, DelayModel(model_bits=bits, compute_ms=args.compute_ms))
        topology = str(build_overlay(conn, "ring").to_topology().save(out / "ring.yaml"))
    name = f"{args.graph}-{underlay.num_silos}"
    cfg = load_config(None, [
        "algorithm=gossip", f"topology={topology}", f"rounds={args.rounds}", f"output_dir={out}",
        f"name={name}", "device=cpu", f"net.compute_ms={args.compute_ms}", *preset, *args.overrides,
    ])
    cfg.scenario = "dfl"
    run_dir = out / cfg.name
    shutil.rmtree(run_dir, ignore_errors=True)  # only this benchmark's own run folder
    run_dir.mkdir(parents=True, exist_ok=True)
    trained = resolve_topology(cfg.topology)
    console.print(f"gossip on {underlay.name} {args.graph} ({trained.num_silos} silos, {len(trained.arcs)} arcs), "
                  f"{args.rounds} rounds on {args.nproc} ranks, preset {args.preset}")
    t0 = time.perf_counter()
    plan = build_plan(cfg, run_dir, args.nproc)
    summary, ranks = spawn(measured_rank, args.nproc, plan, timeout_s=3600)[0]
    total = time.perf_counter() - t0
    split = round_split(run_dir)
    round_s = split.pop("round_s")  # train + exchange + evaluate + checkpoint of the slowest rank
    floor = measure_floor(plan, args.nproc, args.floor_steps) if args.floor_steps > 0 else {}
    per_silo = sum(r["peak_mb"] - r["base_mb"] for r in ranks) / sum(r["silos"] for r in ranks)
    parts = ranks[0]["silo_mb"]
    sims = summary["sim_time_ms"]
    return {
        "silos": trained.num_silos, "ranks": args.nproc, "arcs": len(trained.arcs), "rounds": args.rounds,
        "rounds_per_s": 1 / round_s, "s_per_round": round_s, **split,
        "eval_share": split["eval_time_s"] / max(sum(split.values()), 1e-12),
        # the compute floor of a round: local SGD steps of the busiest rank, one after another
        "ms_per_step": 1000 * split["train_time_s"] / (max(r["silos"] for r in ranks) * cfg.train.local_steps),
        "peak_rank_mb": [r["peak_mb"] for r in ranks], "base_rank_mb": [r["base_mb"] for r in ranks],
        "tree_mb": _rss_mb() + sum(r["peak_mb"] for r in ranks),
        "mb_per_silo": per_silo, **{f"{k}_mb": v for k, v in parts.items()},
        "other_mb": per_silo - sum(parts.values()),
        "mb_per_round": summary["bytes_per_round"] / 1e6, "sim_ms_per_round": sims[-1] / len(sims),
        "run_s": [r["run_s"] for r in ranks], "spawn_s": total, "theta_accuracy": summary["foundation_accuracy"],
        **floor,
        # rounds/s against the floor's: the floor's seconds per round over the measured ones
        "of_floor": floor["floor_s_per_round"] / round_s if floor else float("nan"),
    }


def print_table(rows: list[dict], title: str, console, rec: Record | None = None) -> None:
    from fedsim.report import console_table

    cols = ["silos", "ranks", "arcs", "rounds/s", "floor rounds/s", "of floor", "s/round", "train s", "exchange s",
            "eval s", "ckpt s", "eval share", "ms per SGD step", "isolated step ms", "peak RSS per rank MB", "tree peak MB", "MB per silo", "weights", "optimiser", "data",
            "other", "MB sent per round"]
    cells = [[
        str(r["silos"]), str(r["ranks"]), str(r["arcs"]), f"{r['rounds_per_s']:.3f}",
        f"{1 / r['floor_s_per_round']:.3f}" if "floor_s_per_round" in r else "–",
        f"{r['of_floor']:.2f}×" if "floor_s_per_round" in r else "–", f"{r['s_per_round']:.1f}",
        f"{r['train_time_s']:.1f}", f"{r['exchange_time_s']:.2f}", f"{r['eval_time_s']:.2f}",
        f"{r['checkpoint_time_s']:.2f}", f"{r['eval_share']:.1%}", f"{r.get('ms_per_step', float('nan')):.0f}",
        " / ".join(f"{v:.0f}" for v in r["floor_ms_per_step_ranks"]) if "floor_s_per_round" in r else "–",
        " / ".join(f"{v:.0f}" for v in r["peak_rank_mb"]), f"{r['tree_mb']:.0f}", f"{r['mb_per_silo']:.2f}",
        f"{r['weights_mb']:.2f}", f"{r['optimizer_mb']:.2f}", f"{r['data_mb']:.2f}", f"{r['other_mb']:.2f}",
        f"{r['mb_per_round']:.1f}",
    ] for r in rows]
    table = console_table(cols, cells, title=title, justify=["right"] * len(cols))
    console.print(table)
    if rec is not None:
        rec.table(table)
    for r in rows:
        lines = [f"{r['silos']} silos: run_rank {' / '.join(f'{v:.1f}' for v in r['run_s'])} s per rank "
                 f"(data, rounds, Θ), spawn total {r['spawn_s']:.1f} s, Θ accuracy {r['theta_accuracy']:.3f}"]
        if "floor_s_per_round" in r:
            lines.append(f"{r['silos']} silos: rounds/s at {r['of_floor']:.2f}× the isolated-step floor "
                         f"({r['floor_s_per_round']:.1f} s per round: the busiest rank's steps at "
                         f"{r['floor_ms_per_step']:.1f} ms, every rank stepping at once; target ≥ 0.9×), "
                         f"process tree {r['tree_mb'] / 1024:.2f} GiB (target ≤ 8 GiB)")
        for line in lines:
            console.print(line)
            if rec is not None:
                rec.note(line)


def plot_sweep(rows: list[dict], path: Path) -> Path:
    """Seconds per round and MB per silo against silos, log–log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["silos"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "s_per_round", "seconds per round"), (axes[1], "mb_per_silo", "MB per silo")):
        ax.loglog(n, [max(r[key], 1e-3) for r in rows], "o-")
        if key == "s_per_round":
            ax.loglog(n, [rows[0][key] * x / n[0] for x in n], ":", color="grey", label="linear in silos")
            ax.legend()
        ax.set_xlabel("silos")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"gossip on random-regular:N, {rows[0]['ranks']} ranks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    console = Console(width=200)
    rec = Record.from_args(args, "scale", __file__, argv, variant="sweep" if args.sweep else "")
    if args.sweep:
        sizes = [int(x) for x in args.sweep.split(",") if x.strip()]
        rows = []
        for n in sizes:
            rows.append(run_one(args, f"random-regular:{n}", console))
            (Path(args.out) / "scale_sweep.json").write_text(json.dumps(rows, indent=1))
        print_table(rows, f"gossip on random-regular:N ({args.graph}), {args.nproc} ranks, {args.rounds} rounds, "
                          f"preset {args.preset}", console, rec)
        console.print(f"wrote {plot_sweep(rows, Path(args.out) / 'scale_sweep.png')}")
        rec.write(rows, figures={"scale_sweep.png": lambda path: plot_sweep(rows, path)})
        return 0
    row = run_one(args, args.network, console)
    (Path(args.out) / f"scale_{row['silos']}.json").write_text(json.dumps(row, indent=1))
    print_table([row], f"gossip on {args.network} ({args.graph}): {row['silos']} silos, {args.nproc} ranks, "
                       f"{args.rounds} rounds, preset {args.preset}", console, rec)
    rec.write(row)
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
