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
On one machine this process is rank 0 and starts the others (gloo on the CPU, NCCL on GPUs); under
`torchrun ... -m fedsim run [CONFIG]` this process is one rank of the job.
Results go to OUTPUT_DIR/NAME/: config.yaml, metrics/silo_<i>.jsonl, summary.json,
summary.csv, foundation.pt and checkpoints/ (one file per rank after every round, or every
checkpoint.every rounds and the last; the last two kept; continue with --resume). Evaluation: every silo's model on the test set every
train.eval_every rounds (0: only the last), on all silos or a seeded sample (train.eval_silos: all |
N | auto — all up to 50 silos, then a tenth of them, 10 to 50), Θ always; on synthetic data Θ
also on the test cells (domain, class) some silo trains on and on those no silo holds (in union /
out of union). data.label: source makes the class the image's domain. Simulated faults (silos
that drop out, partial participation, stragglers, link failures, a silo that trains on corrupted
labels or sends noised weights — faults.corrupt: [{silo, kind: random_labels | label_noise |
weight_noise, level, start, end}]) are the config's faults: section. A rank that dies (kill -9,
OOM) or stalls past timeout_s is reported, never a hang; with --max-restarts N (or torchrun
--max-restarts=N) the ranks restart and the run continues from its last checkpoint by itself, and
with faults.on_crash: exclude the silos of a rank that crashed more than N times are left out
(ϑ = 0) while the others finish the run.
Your own data and model: data.kind folder (root/<silo>/images + labels.csv, any number of
classes, RGB or grayscale, masks/ only for segmentation), torchvision (data.name, data.root;
downloads only with data.download: true) or python (data.factory: 'pkg.module:load' called as
load(num_silos=N, seed=S, **data.args)); model.name: 'pkg.module:make_net' called as
make_net(num_classes=C, in_channels=K, **model.args). Plug-ins are imported from the working
directory or PYTHONPATH: they are code, and the only way code enters a run — checkpoints and
init_from files are read as data only (tensors), and one holding anything else is refused.
Your own algorithm: algorithm: 'my_module:MyAlgorithm', a subclass of
fedsim.algorithms.base.Algorithm (its settings: a Settings dataclass attribute, filled from
algorithm_args:; also in compare_with); example: launch/plugin_example/run.sh --set
algorithm=my_algorithm:ServerMomentum (docs/extending.md, "Write an algorithm").
aggregation: mean | median | trimmed_mean | krum sets how the CFL server, the DFL mixes and Θ
combine weights (aggregation_trim, krum_f, krum_m; docs/algorithms.md, "Robust aggregation")."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an experiment (default: the embedded example)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from fedsim.algorithms import algorithm_names
    from fedsim.compression import CODEC_KINDS
    from fedsim.config import AGGREGATIONS, SCENARIOS
    from fedsim.privacy import PRIVACY_MODES

    p.add_argument("config", nargs="?", help="experiment YAML (keys: algorithm, scenario, topology, data, "
                   "model, train, fedefm, fedopt, scaffold, emd, net, faults, privacy, compression, rounds, seed, "
                   "output_dir, ...; algorithm: "
                   f"{' | '.join(algorithm_names())} | 'module:Class' (algorithm_args: its settings); "
                   f"aggregation: {' | '.join(AGGREGATIONS)}; scenario: {' | '.join(SCENARIOS)}; task: classification | "
                   "segmentation; init: random | pretrained | fm; data.kind: synthetic | folder | torchvision | "
                   "python (data.factory: 'pkg.module:load'); model.name: a built-in or 'pkg.module:make_net'; "
                   f"privacy.mode: {' | '.join(PRIVACY_MODES)} (sample: DP-SGD per silo with Opacus; client: "
                   "DP-FedAvg) with privacy.noise_multiplier or privacy.target_epsilon, privacy.max_grad_norm, "
                   "privacy.delta, and the ε spent in summary.json (epsilon); "
                   f"compression.kind: {' | '.join(CODEC_KINDS)} (compression.ratio for topk, "
                   "compression.error_feedback), coded bytes counted and clocked; fedopt.server_optimizer: adam | "
                   "yogi | adagrad | sgd (FedOpt's server step on the mean update); scaffold and fednova take "
                   "train.optimizer: sgd (scaffold: train.momentum: 0); faults.past_deadline: partial gives a "
                   "straggler past faults.deadline the local steps it finishes in time, which fednova normalises)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key by dotted path, e.g. --set rounds=3 --set data.root=/x")
    p.add_argument("--nproc", type=int, default=None,
                   help="ranks to spawn (default: one per GPU, else min(silos, CPU cores)); "
                        "silos are spread over ranks in contiguous blocks")
    p.add_argument("--resume", action="store_true",
                   help="continue OUTPUT_DIR/NAME from its last checkpointed round (read as data only: a file "
                        "holding anything but tensors and plain containers is refused)")
    p.add_argument("--max-restarts", type=int, default=0, metavar="N",
                   help="when a rank dies or stalls, restart the ranks and continue from the last checkpoint, "
                        "up to N times for the same silos (default 0: stop, exit 2, resumable); "
                        "faults.on_crash: exclude then leaves those silos out instead of stopping")
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


def check_output_dir(output_dir: str) -> None:
    """``output_dir`` is a folder this process can write in, or can be made one: one line now
    rather than a traceback once the ranks have started. Nothing is left behind by the check."""
    import tempfile

    from fedsim.errors import ConfigError

    path = Path(output_dir).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"output_dir {output_dir}: {existing} is a file, not a folder; choose another "
                          "output_dir (--set output_dir=PATH)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"output_dir {output_dir}: fedsim cannot write in {existing} ({exc.strerror or exc}); "
                          "choose another output_dir (--set output_dir=PATH)") from None


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


def resume_changes(run_dir: Path, cfg) -> dict[str, list]:
    """The keys in which ``cfg`` differs from the run's own ``config.yaml``, all result-neutral
    (``fedsim.config.RESULT_NEUTRAL``; or more ``rounds``, which continue the same run):
    key → [before, now]. Any other difference is an error — a resumed run must be the run its
    folder records, or the record no longer describes the result."""
    import yaml

    from fedsim.config import RESULT_NEUTRAL, config_differences
    from fedsim.errors import ConfigError

    saved_path = run_dir / "config.yaml"
    try:
        saved = yaml.safe_load(saved_path.read_text())
    except (OSError, yaml.YAMLError):
        saved = None
    if not isinstance(saved, dict):
        raise ConfigError(f"--resume: {saved_path} is missing or unreadable, so nothing tells which config the run "
                          "used; start a new run (without --resume)")
    changed = config_differences(saved, cfg)
    neutral = {key: [a, b] for key, a, b in changed
               if any(key == k or key.startswith(k + ".") for k in RESULT_NEUTRAL)}
    if "rounds" in {key for key, _, _ in changed}:
        # more rounds continue the same run: its first rounds are those already run (bit for bit),
        # unless σ was calibrated over the planned rounds (privacy.target_epsilon)
        from fedsim.checkpoint import latest_checkpoint

        done = (latest_checkpoint(run_dir) or 0) + 1
        if cfg.rounds <= done:
            raise ConfigError(f"--resume: {run_dir} has run {done} round(s) already; rounds {cfg.rounds} would undo "
                              f"them (give more rounds to continue it, or start a new run)")
        if cfg.privacy.target_epsilon is None:
            neutral["rounds"] = [saved.get("rounds"), cfg.rounds]
    other = [(key, a, b) for key, a, b in changed if key not in neutral]
    if other:
        shown = "; ".join(f"{key} is {a!r} there, {b!r} now" for key, a, b in other[:3])
        more = f" (and {len(other) - 3} more key(s): {', '.join(k for k, _, _ in other[3:])})" if len(other) > 3 else ""
        raise ConfigError(f"--resume: {run_dir} was run with another config: {shown}{more}; resume with the run's own "
                          f"settings (its config.yaml) or start a new run without --resume")
    return neutral


def record_config(plans, run_dir: Path, cfg, resume: bool) -> None:
    """Write the run's ``config.yaml``: a new run's resolved config; on --resume only when
    result-neutral keys changed (recorded in the next attempt, see AttemptLog) and the run goes on
    — a finished run is never rewritten, unless more rounds continue it."""
    if resume:
        changes = resume_changes(run_dir, cfg)
        finished = all((Path(p.run_dir) / "summary.json").is_file() for p in plans)
        if not changes or finished and "rounds" not in changes:
            return
        plans[0].config_changes = changes
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())


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
    from fedsim.errors import ConfigError
    from fedsim.plan import experiment_plans

    nproc = default_nproc(cfg, topology.num_silos) if args.nproc is None else args.nproc
    if nproc < 1 or nproc > topology.num_silos:
        raise ConfigError(f"--nproc {nproc}: choose between 1 and the {topology.num_silos} silo(s) to place "
                          "(or leave it out: one rank per GPU, else per CPU core)")
    if args.max_restarts < 0:
        raise ConfigError(f"--max-restarts {args.max_restarts}: give a number >= 0")
    check_output_dir(cfg.output_dir)
    run_dir = run_dir_for(cfg, args.resume)
    plans = experiment_plans(cfg, run_dir, nproc, resume=args.resume)
    record_config(plans, run_dir, cfg, args.resume)
    prepare_initial_states(plans, args.quiet)
    if args.max_restarts == 0 and cfg.faults.on_crash != "exclude":
        summaries = run_here(cfg, plans, run_dir, nproc, args.resume)
    else:
        summaries, plans = run_with_restarts(cfg, plans, run_dir, nproc, args.resume, args.max_restarts)
    finish(plans, summaries, run_dir, args.quiet)
    return 0


def run_here(cfg, plans, run_dir: Path, nproc: int, resume: bool):
    """Without restarts, rank 0 runs in this process (see spawn_here: one interpreter fewer,
    the other ranks forked on the CPU); a rank that dies or stalls ends in the failure report."""
    from fedsim.errors import SiloFailure
    from fedsim.launch import spawn_here
    from fedsim.trainer import run_jobs

    try:
        return spawn_here(run_jobs, nproc, plans, resume, device=cfg.device, timeout_s=cfg.timeout_s)
    except SiloFailure as exc:
        raise failure_report(exc, plans[0].topology.num_silos, nproc, run_dir) from None


def run_with_restarts(cfg, plans, run_dir: Path, nproc: int, resume: bool, max_restarts: int):
    """Spawn the ranks for ``plans`` in child processes (this one only watches them, so it
    survives any rank's death); when a rank dies or stalls, restart them from the last
    checkpoint (one line on stderr each time) as long as no silo's ranks crashed more than
    ``max_restarts`` times. Past that, ``faults.on_crash: exclude`` marks those silos failed
    from the round they were lost in and the rest finish on the remaining ranks; ``resume``
    stops with the failure report. Returns (summaries, the plans that finished)."""
    import sys
    from collections import Counter

    from fedsim.checkpoint import usable_checkpoint
    from fedsim.distributed import Placement
    from fedsim.errors import SiloFailure
    from fedsim.faults import record_failed
    from fedsim.launch import spawn
    from fedsim.plan import experiment_plans
    from fedsim.trainer import run_jobs

    crashes: Counter[int] = Counter()  # per silo: how often the rank hosting it crashed
    attempt = 0
    while True:
        try:
            summaries = spawn(run_jobs, nproc, plans, resume, device=cfg.device, timeout_s=cfg.timeout_s)[0]
            return summaries, plans
        except SiloFailure as exc:
            # the job that was running: the first without a summary (they run in order)
            running = next((p for p in plans if not (Path(p.run_dir) / "summary.json").is_file()), plans[0])
            placement = Placement(running.topology.num_silos, nproc)
            lost = sorted(s for r in exc.ranks for s in placement.silos_on(r) if s not in running.failed)
            for s in lost:
                crashes[s] += 1
            over = [s for s in lost if crashes[s] > max_restarts]
            last, _ = usable_checkpoint(running.run_dir)
            lost_round = 0 if last is None else last + 1
            who = f"rank(s) {', '.join(map(str, exc.ranks))} (silo(s) {', '.join(map(str, lost)) or '-'})"
            if over and cfg.faults.on_crash != "exclude" or not lost:
                raise failure_report(exc, running.topology.num_silos, nproc, running.run_dir,
                                     max_restarts, crashes) from None
            if over:
                record_failed(running.run_dir, [
                    {"silo": s, "round": lost_round, "reason": "crashed", "crashes": crashes[s],
                     "rank": placement.rank_of(s)} for s in over])
                nproc = max(1, nproc - len({placement.rank_of(s) for s in over}))
                note = (f"silo(s) {', '.join(map(str, over))} crashed {max(crashes[s] for s in over)} time(s) "
                        f"(more than --max-restarts {max_restarts}): excluded (ϑ = 0) from round {lost_round} on "
                        f"(faults.on_crash: exclude); the other silos continue on {nproc} rank(s)")
            else:
                note = (f"restart {max(crashes[s] for s in lost)} of {max_restarts} for these silos")
            where = f"from round {last}'s checkpoint" if last is not None else "from round 0 (nothing checkpointed yet)"
            print(f"fedsim: {who} failed in round {lost_round} — {_cause(exc)}; {note}; continuing {where}",
                  file=sys.stderr, flush=True)
            attempt += 1
            resume = True
            plans = experiment_plans(cfg, run_dir, nproc, resume=True, attempt=attempt)


def _cause(exc) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "…"


def prepare_initial_states(plans, quiet: bool = False) -> None:
    """Train and cache the ``init: pretrained | fm`` states once, here, before the ranks start
    (each rank then loads the cached file)."""
    from fedsim.fminit import prepare_initial_state
    from fedsim.ui import console

    for plan in plans:
        prepare_initial_state(plan.cfg, None if quiet else console().print)


def failure_report(exc, num_silos: int, nproc: int, run_dir: Path, max_restarts: int = 0, crashes=None):
    """Name the silos that were lost and what was saved, so the user can resume."""
    from fedsim.checkpoint import latest_checkpoint
    from fedsim.distributed import Placement
    from fedsim.errors import SiloFailure

    placement = Placement(num_silos, nproc)
    silos = sorted(s for r in exc.ranks for s in placement.silos_on(r))
    done = latest_checkpoint(run_dir)
    saved = f"rounds 0..{done} are checkpointed in {run_dir}" if done is not None else "no round had finished"
    tried = f" after {max(crashes[s] for s in silos) - 1} restart(s)" if crashes and max_restarts else ""
    return SiloFailure(
        f"silo(s) {', '.join(map(str, silos))} failed or stalled{tried} — {exc}; {saved}; continue with --resume "
        "(or run with --max-restarts N; faults.on_crash: exclude leaves a silo that cannot come back out)",
        ranks=exc.ranks)


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
    # Θ on the test cells some silo trains on and on those no silo holds, when the data split so
    union = any(s and s.get("test_samples_in_union") is not None for s in summaries)
    notes = ["MB/round: the mean over the rounds run, all silos"]
    if union:
        notes.append("in-union / out-of-union: Θ on the test cells (domain, class) some silo trains on / none holds")
    if rows:
        notes.append(f"downstream: mean ± std over fine-tune seeds {seeds}; Δ Dice: mean ± std of the seed-by-seed "
                     "difference to random init — with 3 seeds a Δ smaller than about 2.5× its ± is within the noise "
                     "(95% t-interval)")
    table = Table(title="Foundation models compared (same data, same seed)", caption="; ".join(notes))
    for col in ("initialisation", "Θ acc", *(("in-union", "out-of-union") if union else ()), "Dice",
                "Δ Dice", "mIoU", "Jaccard", "tube acc", "MB/round", "wall s"):
        # one line a cell: a label or "m ± s" broken in two reads as two numbers
        table.add_column(col, justify="left" if col == "initialisation" else "right", no_wrap=True)

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
        split = [fmt(summ and summ.get(f"foundation_accuracy_{side}")) for side in ("in_union", "out_of_union")]
        table.add_row(label, fmt(summ and summ["foundation_accuracy"]), *(split if union else []), pm(r, "dice"),
                      pm(r, "dice_delta", "+"),
                      fmt(r.get("miou")), fmt(r.get("jaccard")), pm(r, "accuracy"),
                      fmt(summ and summ["bytes_per_round"] / 1e6, ".2f"), fmt(summ and summ["wall_time_s"], ".1f"))
    console().print(table)


def torchrun_run_dir(cfg, resume: bool) -> tuple[Path, bool]:
    """(the run folder, whether to resume) of this torchrun worker group. After a restart
    (``torchrun --max-restarts``; TORCHELASTIC_RESTART_COUNT > 0) it is the folder the first
    attempt of the same job (TORCHELASTIC_RUN_ID) started, continued from its checkpoint."""
    from fedsim.checkpoint import latest_checkpoint

    job = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0 and not resume:
        base, n = Path(cfg.output_dir) / cfg.name, 1
        candidate = base
        found = None
        while candidate.exists():
            marker = candidate / "checkpoints" / "torchrun_job"
            if marker.is_file() and marker.read_text() == job and not (candidate / "summary.json").is_file():
                found = candidate
            n += 1
            candidate = base.with_name(f"{cfg.name}-{n}")
        if found is not None:
            return found, latest_checkpoint(found) is not None
    return run_dir_for(cfg, resume), resume


def mark_torchrun_job(run_dir: Path) -> None:
    """Mark ``run_dir`` as this torchrun job's, so a restarted worker group finds it again
    (:func:`torchrun_run_dir`); written once the plan is checked, so a refused start writes nothing."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / "torchrun_job").write_text(os.environ.get("TORCHELASTIC_RUN_ID", ""))


def _handle_torchrun(args: argparse.Namespace, cfg) -> int:
    from fedsim.distributed import broadcast_object
    from fedsim.launch import join_torchrun
    from fedsim.plan import experiment_plans
    from fedsim.trainer import run_jobs

    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    check_output_dir(cfg.output_dir)
    if args.resume:  # every rank refuses a changed config alike, before the group forms
        resume_changes(run_dir_for(cfg, True), cfg)

    def job(ctx):
        plans, resume = None, args.resume
        if ctx.rank == 0:  # the plan is resolved once and handed to every rank
            run_dir, resume = torchrun_run_dir(cfg, args.resume)
            plans = experiment_plans(cfg, run_dir, ctx.world_size, resume=resume, attempt=attempt)
            mark_torchrun_job(run_dir)
            if not attempt or args.resume:  # a torchrun restart continues the config its first attempt wrote
                record_config(plans, run_dir, cfg, resume)
            prepare_initial_states(plans, args.quiet)
        plans, resume = broadcast_object((plans, resume))
        return plans, run_jobs(ctx, plans, resume), ctx.rank

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
    table.add_column("test loss", justify="right")
    table.add_column("train loss (last round)", justify="right")
    table.add_column("MB sent (last round)", justify="right")
    private = "privacy" in summary
    if private:
        table.add_column(f"ε (δ = {summary['privacy']['delta']:g})", justify="right")
    part = summary.get("participation") or {}
    taken = part.get("rounds_taken_part", {})
    rounds = len(summary.get("round_time_s", [])) or summary["rounds"]
    faulty = any(n < rounds for n in taken.values()) or part.get("failed_silos")
    if faulty:  # faults: how many rounds each silo took part in, and why it sat the others out
        table.add_column("rounds in", justify="right")
        table.add_column("absent (rounds)")
    def num(v):
        return "" if v is None else f"{v:.3f}"

    for s in summary["silos"]:
        cells = [str(s["silo"]), s["name"], s.get("model", ""), num(s["accuracy"]), num(s.get("test_loss")),
                 num(s["loss"]), f"{s['bytes_sent_last_round'] / 1e6:.2f}"]
        if private:
            cells.append(f"{s['epsilon']:.2f}" if s.get("epsilon") is not None else "")
        if faulty:
            why = part.get("absent_rounds", {}).get(str(s["silo"]), {})
            cells += [f"{taken.get(str(s['silo']), 0)}/{rounds}", ", ".join(f"{k} {v}" for k, v in why.items())]
        table.add_row(*cells)
    table.add_section()
    last_round = sum(s["bytes_sent_last_round"] for s in summary["silos"]) / 1e6
    pad = ([f"{summary['epsilon']:.2f} (max)"] if private and summary.get("epsilon") is not None else
           [""] if private else []) + (["", ""] if faulty else [])
    if summary["foundation_accuracy"] is None:  # no shared weights (see plan.forms_foundation): no Θ
        table.add_row("", "mean over silos (no Θ: no shared weights)", "", num(summary.get("mean_silo_accuracy")),
                      "", "", f"{last_round:.2f} (all)", *pad)
    else:  # Θ is never trained: its loss is on the test set
        table.add_row("Θ", "foundation (all-reduce)", "", num(summary["foundation_accuracy"]),
                      num(summary["foundation_loss"]), "", f"{last_round:.2f} (all)", *pad)
        if summary.get("test_samples_in_union") is not None:  # the same predictions, split (synthetic data)
            blank = [""] * (len(table.columns) - 4)
            for side in ("in_union", "out_of_union"):
                acc = summary.get(f"foundation_accuracy_{side}")
                table.add_row("", f"  {side.replace('_', ' ')} ({summary[f'test_samples_{side}']} test samples)", "",
                              "–" if acc is None else f"{acc:.3f}", *blank)
    con.print(table)
    rounds_run = len(summary.get("round_time_s", [])) or summary["rounds"]
    con.print(f"traffic: {summary['bytes_per_round'] / 1e6:.2f} MB per round, all silos, the mean over {rounds_run} "
              f"round(s); {summary['total_bytes'] / 1e6:.2f} MB in all")
    for lost in part.get("failed_silos", []):
        how = (f"crashed {lost['crashes']} time(s) on rank {lost['rank']} and was excluded"
               if lost["reason"] == "crashed" else "dropped out for good")
        name = next((x["name"] for x in summary["silos"] if x["silo"] == lost["silo"]), "")
        con.print(f"silo {lost['silo']} ({name}) {how} from round {lost['round']} "
                  "on (ϑ = 0 in every later aggregate and in Θ)")
    for c in part.get("corruption", []):  # faults.corrupt
        name = next((x["name"] for x in summary["silos"] if x["silo"] == c["silo"]), "")
        end = rounds - 1 if c["end"] is None else c["end"]
        con.print(f"silo {c['silo']} ({name}) corrupted: {c['kind']} {c['level']:g} in rounds {c['start']}..{end}")
    if private:
        p = summary["privacy"]
        con.print(f"privacy: {p['mode']}-level DP, σ = {p['noise_multiplier']:.3g}, clip {p['max_grad_norm']:g}"
                  f"{', target ε ' + format(p['target_epsilon'], 'g') if p['target_epsilon'] else ''} "
                  f"(Opacus RDP accountant)")
    if "compression" in summary:
        c = summary["compression"]
        con.print(f"compression: {c['kind']}{' ratio ' + format(c['ratio'], 'g') if c['ratio'] else ''}, "
                  f"error feedback {'on' if c['error_feedback'] else 'off'} (bytes are the coded sizes)")
    extra = summary.get("downstream")
    if extra:
        con.print(extra)
    attempts = summary.get("attempts", 1)
    over = f" over {attempts} attempts (restarts or --resume)" if attempts > 1 else ""
    con.print(f"wall time {summary['wall_time_s']:.1f} s{over} · results in {run_dir}/")
