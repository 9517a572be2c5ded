"""``fedsim run``: train on this machine (ranks spawned here) or as one rank of a torchrun job."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

HELP = """\
Run an experiment. Without CONFIG the embedded default runs (fedsim/default.yaml: FedEFM on a
4-silo ring with unseen domains and labels, FedAvg on the same data for comparison, then
downstream fine-tuning from each foundation and from random weights).
On one machine the ranks are spawned here (gloo on the CPU, NCCL on GPUs); under
`torchrun ... -m fedsim run [CONFIG]` this process is one rank of the job.
Results go to OUTPUT_DIR/NAME/: config.yaml, metrics/silo_<i>.jsonl, summary.json,
summary.csv, foundation.pt and checkpoints/ (every round; continue with --resume)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an experiment (default: the embedded example)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from fedsim.algorithms import algorithm_names
    from fedsim.config import SCENARIOS

    p.add_argument("config", nargs="?", help="experiment YAML (keys: algorithm, scenario, topology, data, "
                   "model, train, fedefm, emd, net, rounds, seed, output_dir, ...; algorithm: "
                   f"{' | '.join(algorithm_names())}; scenario: {' | '.join(SCENARIOS)}; task: classification | "
                   "segmentation; init: random | pretrained | fm)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key by dotted path, e.g. --set rounds=3 --set data.root=/x")
    p.add_argument("--nproc", type=int, default=None,
                   help="ranks to spawn (default: one per GPU, else min(silos, CPU cores)); "
                        "silos are spread over ranks in contiguous blocks")
    p.add_argument("--resume", action="store_true",
                   help="continue OUTPUT_DIR/NAME from its last checkpointed round")
    p.add_argument("--quiet", action="store_true", help="no results table")
    p.set_defaults(handler=handle)


def prepare(args: argparse.Namespace):
    """Everything that can be checked before any rank starts (so errors are one line)."""
    return prepare_config(args.config, args.overrides)


def prepare_config(config, overrides):
    """The resolved config (the embedded default when ``config`` is None) and its training
    topology, checked as far as it can be before any rank starts."""
    from fedsim.config import DEFAULT_CONFIG, load_config
    from fedsim.errors import ConfigError
    from fedsim.plan import baseline_config, resolve

    cfg, _underlay, topology = resolve(load_config(config or DEFAULT_CONFIG, overrides))
    for algorithm in cfg.compare_with:  # a baseline that cannot run must fail here, not in a rank
        try:
            resolve(baseline_config(cfg, algorithm))
        except ConfigError as exc:
            raise ConfigError(f"compare_with: {exc}") from None
    return cfg, topology


def fresh_run_dir(output_dir: str, name: str) -> Path:
    """OUTPUT_DIR/NAME, or NAME-2, NAME-3, … when that already holds a run (never overwrite)."""
    base = Path(output_dir) / name
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return candidate


def run_dir_for(cfg, resume: bool) -> Path:
    from fedsim.checkpoint import latest_checkpoint
    from fedsim.errors import ConfigError

    if resume:
        run_dir = Path(cfg.output_dir) / cfg.name
        if latest_checkpoint(run_dir) is None:
            raise ConfigError(f"--resume: {run_dir} has no checkpoint to resume from")
        return run_dir
    return fresh_run_dir(cfg.output_dir, cfg.name)


def default_nproc(cfg, num_silos: int) -> int:
    """One rank per GPU, else one per CPU core, never more than the silos to place (``num_silos``
    of the training graph: 1 when the data are pooled)."""
    import torch

    if cfg.device != "cpu" and torch.cuda.is_available():
        return min(num_silos, torch.cuda.device_count())
    return max(1, min(num_silos, os.cpu_count() or 1))


def handle(args: argparse.Namespace) -> int:
    from fedsim.distributed import launched_by_torchrun

    cfg, topology = prepare(args)
    if launched_by_torchrun():
        return _handle_torchrun(args, cfg)
    from fedsim.errors import ConfigError, SiloFailure
    from fedsim.launch import spawn
    from fedsim.plan import experiment_plans
    from fedsim.trainer import run_jobs

    nproc = args.nproc or default_nproc(cfg, topology.num_silos)
    if nproc < 1 or nproc > topology.num_silos:
        raise ConfigError(f"--nproc {nproc}: choose between 1 and the {topology.num_silos} silo(s) to place")
    run_dir = run_dir_for(cfg, args.resume)
    plans = experiment_plans(cfg, run_dir, nproc)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    prepare_initial_states(plans, args.quiet)
    try:
        summaries = spawn(run_jobs, nproc, plans, args.resume, device=cfg.device, timeout_s=cfg.timeout_s)[0]
    except SiloFailure as exc:
        raise failure_report(exc, topology.num_silos, nproc, run_dir) from None
    finish(plans, summaries, run_dir, args.quiet)
    return 0


def prepare_initial_states(plans, quiet: bool = False) -> None:
    """Train and cache the ``init: pretrained | fm`` states once, here, before the ranks start
    (each rank then loads the cached file)."""
    from fedsim.fminit import prepare_initial_state
    from fedsim.ui import console

    for plan in plans:
        prepare_initial_state(plan.cfg, None if quiet else console().print)


def failure_report(exc, num_silos: int, nproc: int, run_dir: Path):
    """Name the silos that were lost and what was saved, so the user can resume."""
    from fedsim.checkpoint import latest_checkpoint
    from fedsim.distributed import Placement
    from fedsim.errors import SiloFailure

    placement = Placement(num_silos, nproc)
    silos = sorted(s for r in exc.ranks for s in placement.silos_on(r))
    done = latest_checkpoint(run_dir)
    saved = f"rounds 0..{done} are checkpointed in {run_dir}" if done is not None else "no round had finished"
    return SiloFailure(
        f"silo(s) {', '.join(map(str, silos))} failed or stalled — {exc}; {saved}; continue with --resume "
        "(set accumulation_status to 0 for a silo that cannot come back)", ranks=exc.ranks)


def finish(plans, summaries, run_dir: Path, quiet: bool) -> None:
    """After the distributed part (rank 0 / the parent): the comparison plot, the downstream
    stage and the tables."""
    import json

    from fedsim.plots import plot_runs

    cfg = plans[0].cfg
    if len(plans) > 1:
        plot_runs([p.run_dir for p in plans], run_dir / "comparison.png", [p.label for p in plans])
    rows = None
    if cfg.downstream.enabled:
        from fedsim.downstream import rows_to_json

        rows = downstream_stage(plans)
        (run_dir / "downstream.json").write_text(json.dumps(rows_to_json(rows), indent=2))
    if quiet:
        return
    print_summary(summaries[0], run_dir)
    if len(summaries) > 1 or rows:
        print_comparison(plans, summaries, rows)


def downstream_stage(plans) -> list[dict[str, Any]]:
    """Fine-tune from random weights and from every run's foundation Θ on the same downstream data."""
    from fedsim.downstream import compare_initializations

    cfg = plans[0].cfg
    inits: dict[str, Any] = {"random": None}
    for plan in plans:
        if plan.forms_foundation:
            inits[plan.label] = str(Path(plan.run_dir) / "foundation.pt")
    return compare_initializations(inits, cfg.model, cfg.downstream, cfg.data.image_size, cfg.seed)


def print_comparison(plans, summaries, rows) -> None:
    from rich.table import Table

    from fedsim.ui import console

    by_init = {r["init"]: r for r in rows or []}
    seeds = ",".join(map(str, (rows or [{}])[0].get("seeds", [])))
    table = Table(title="Foundation models compared (same data, same seed)", caption=(
        f"downstream: mean ± std over fine-tune seeds {seeds}; Δ Dice: mean ± std of the seed-by-seed "
        "difference to random init — with 3 seeds a Δ smaller than about 2.5× its ± is within the noise "
        "(95% t-interval)") if rows else None)
    for col in ("initialisation", "foundation acc", "Dice", "Δ Dice", "mIoU", "Jaccard", "tube acc", "MB/round",
                "wall s"):
        table.add_column(col, justify="left" if col == "initialisation" else "right")

    def fmt(v, spec=".3f"):
        return "" if v is None else format(v, spec)

    def pm(r, key, sign=""):
        m, s = r.get(key), r.get(f"{key}_std")
        if m is None or m != m:
            return ""
        return f"{m:{sign}.3f}" + ("" if s is None or s != s else f" ± {s:.3f}")

    entries = [("random", None)] + [(p.label, s) for p, s in zip(plans, summaries)]
    for label, summ in entries:
        if summ is None and label not in by_init:
            continue
        r = by_init.get(label, {})
        table.add_row(label, fmt(summ and summ["foundation_accuracy"]), pm(r, "dice"), pm(r, "dice_delta", "+"),
                      fmt(r.get("miou")), fmt(r.get("jaccard")), pm(r, "accuracy"),
                      fmt(summ and summ["bytes_per_round"] / 1e6, ".2f"), fmt(summ and summ["wall_time_s"], ".1f"))
    console().print(table)


def _handle_torchrun(args: argparse.Namespace, cfg) -> int:
    from fedsim.distributed import broadcast_object
    from fedsim.launch import join_torchrun
    from fedsim.plan import experiment_plans
    from fedsim.trainer import run_jobs

    def job(ctx):
        plans = None
        if ctx.rank == 0:  # the plan is resolved once and handed to every rank
            run_dir = run_dir_for(cfg, args.resume)
            plans = experiment_plans(cfg, run_dir, ctx.world_size)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(cfg.to_yaml())
            prepare_initial_states(plans, args.quiet)
        plans = broadcast_object(plans)
        return plans, run_jobs(ctx, plans, args.resume), ctx.rank

    plans, summaries, rank = join_torchrun(job, device=cfg.device, timeout_s=cfg.timeout_s)
    if rank == 0:
        finish(plans, summaries, Path(plans[0].run_dir), args.quiet)
    return 0


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from rich.table import Table

    from fedsim.ui import console

    con = console()
    table = Table(title=f"{summary['name']}: {summary['algorithm']} ({summary['scenario'].upper()}) on "
                        f"{summary['topology']}, {summary['num_silos']} silos on {summary['world_size']} rank(s)")
    table.add_column("silo", justify="right")
    table.add_column("name")
    table.add_column("model")
    table.add_column("test Dice" if summary.get("metric") == "dice" else "test accuracy", justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("MB sent (last round)", justify="right")
    for s in summary["silos"]:
        acc = "" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
        loss = "" if s["loss"] is None else f"{s['loss']:.3f}"
        table.add_row(str(s["silo"]), s["name"], s.get("model", ""), acc, loss,
                      f"{s['bytes_sent_last_round'] / 1e6:.2f}")
    table.add_section()
    per_round = f"{summary['bytes_per_round'] / 1e6:.2f} /round"
    if summary["foundation_accuracy"] is None:  # no shared weights (see plan.forms_foundation): no Θ
        mean = summary.get("mean_silo_accuracy")
        table.add_row("", "mean over silos (no Θ: no shared weights)", "", "" if mean is None else f"{mean:.3f}",
                      "", per_round)
    else:
        table.add_row("Θ", "foundation (all-reduce)", "", f"{summary['foundation_accuracy']:.3f}",
                      f"{summary['foundation_loss']:.3f}", per_round)
    con.print(table)
    extra = summary.get("downstream")
    if extra:
        con.print(extra)
    con.print(f"wall time {summary['wall_time_s']:.1f} s · results in {run_dir}/")
