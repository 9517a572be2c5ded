"""One experiment, from a config to its results: the one way in for ``fedsim run``, ``fedsim sweep``
and the benchmark scripts.

    exp = prepare("my.yaml", ["rounds=3"], nproc=2)  # resolve and check; choose the run folder,
                                                     # write config.yaml, cache the initial states
    result = finish(launch(exp))                     # the ranks (restarted after a crash), then the
                                                     # comparison plot and the downstream stage
    result.summary["foundation_accuracy"]            # an ExperimentResult
    # or in one call: result = run("my.yaml", ["rounds=3"], nproc=2)

:func:`prepare` does everything a user can get wrong before any rank starts and before anything
is written (a :class:`~fedsim.errors.FedsimError`, one line), :func:`launch` starts the ranks —
spawned on this machine, or this process as one rank of a torchrun job — and :func:`finish`
runs what follows the distributed part in this process. Several prepared experiments of the
same rank count can share one process group (:func:`launch_together`, as ``fedsim sweep`` does).
Printing is the caller's: nothing here prints but progress lines given to ``progress`` and the
one stderr line per restart.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from fedsim.checkpoint import latest_checkpoint, usable_checkpoint
from fedsim.config import DEFAULT_CONFIG, RESULT_NEUTRAL, ExperimentConfig, config_differences, load_config
from fedsim.distributed import Placement, broadcast_object, launched_by_torchrun
from fedsim.downstream import compare_initializations, rows_to_json
from fedsim.errors import ConfigError, SiloFailure
from fedsim.faults import record_failed
from fedsim.fminit import prepare_initial_state
from fedsim.launch import join_torchrun, spawn, spawn_here
from fedsim.plan import RunPlan, baseline_config, experiment_plans, resolve
from fedsim.plots import plot_runs
from fedsim.topology import Topology
from fedsim.trainer import run_jobs

Progress = Callable[[str], Any]


@dataclass
class Experiment:
    """A checked experiment, ready to :func:`launch` (made by :func:`prepare`)."""

    cfg: ExperimentConfig
    topology: Topology  # the training graph (its silos are placed on the ranks)
    nproc: int | None  # ranks; None under torchrun (the job's world size)
    resume: bool  # continue from the run folder's checkpoints
    max_restarts: int = 0  # restarts after a rank died or stalled (spawned ranks; torchrun has its own)
    run_dir: Path | None = None  # None under torchrun until rank 0 chooses it
    plans: list[RunPlan] = field(default_factory=list)  # the main run, then its compare_with baselines
    torchrun: bool = False  # this process is one rank of a torchrun job
    progress: Progress | None = None  # where the lines of the initial-state training go


@dataclass
class ExperimentResult:
    """What an experiment produced: its folder, the runs that finished and their summaries."""

    run_dir: Path
    plans: list[RunPlan]  # the runs that finished: the main run, then the compare_with baselines
    summaries: list[dict[str, Any]]  # each plan's summary.json, in the same order
    downstream: list[dict[str, Any]] | None = None  # the downstream stage's rows (downstream.json), once finished

    @property
    def summary(self) -> dict[str, Any]:
        """The main run's summary."""
        return self.summaries[0]


# ---- prepare: everything that can be checked before any rank starts ------------------------------

def resolve_config(config: str | Path | ExperimentConfig | None = None,
                   overrides: Sequence[str] = ()) -> tuple[ExperimentConfig, Topology]:
    """The resolved config (``config``: a YAML file, the embedded default when None, or a config
    object, checked again) and its training topology, checked as far as it can be before any rank
    starts — each ``compare_with`` baseline too."""
    if isinstance(config, ExperimentConfig):
        if overrides:
            raise ValueError("resolve_config: give overrides with a config file, not with a config object")
        cfg = config
    else:
        cfg = load_config(config or DEFAULT_CONFIG, list(overrides))
    cfg, _underlay, topology = resolve(cfg)
    for algorithm in cfg.compare_with:  # a baseline that cannot run must fail here, not in a rank
        try:
            resolve(baseline_config(cfg, algorithm))
        except ConfigError as exc:
            raise ConfigError(f"compare_with: {exc}") from None
    return cfg, topology


def check_output_dir(output_dir: str | Path) -> None:
    """``output_dir`` is a folder this process can write in, or can be made one: one line now
    rather than a traceback once the ranks have started. Nothing is left behind by the check."""
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


def default_nproc(cfg: ExperimentConfig, num_silos: int) -> int:
    """One rank per GPU, else one per CPU core, never more than the silos to place (``num_silos``
    of the training graph: 1 when the data are pooled)."""
    if cfg.device != "cpu" and torch.cuda.is_available():
        return min(num_silos, torch.cuda.device_count())
    return max(1, min(num_silos, os.cpu_count() or 1))


def fresh_run_dir(output_dir: str | Path, name: str) -> Path:
    """OUTPUT_DIR/NAME, or NAME-2, NAME-3, … when that already holds a run (never overwrite)."""
    base = Path(output_dir) / name
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return candidate


def run_dir_for(cfg: ExperimentConfig, resume: bool) -> Path:
    """The run folder: OUTPUT_DIR/NAME with a checkpoint to continue (``resume``), else a fresh one."""
    if resume:
        run_dir = Path(cfg.output_dir) / cfg.name
        if latest_checkpoint(run_dir) is None:
            raise ConfigError(f"--resume: {run_dir} has no checkpoint to resume from")
        return run_dir
    return fresh_run_dir(cfg.output_dir, cfg.name)


def same_config(saved_yaml: str, cfg: ExperimentConfig) -> bool:
    """Whether a saved ``config.yaml`` describes the run ``cfg`` would make: every saved key has
    the same value, and a key the saved file lacks (added to fedsim since) holds its default —
    new keys default to the old behaviour, so such a run need not be repeated. Where the run
    lives (``output_dir``, ``name``) is not compared: the folder already says it, and a sweep
    started from another working directory (an absolute ``--out``) is the same run."""
    try:
        saved = yaml.safe_load(saved_yaml)
    except yaml.YAMLError:
        return False
    return isinstance(saved, dict) and not config_differences(saved, cfg, ignore=("output_dir", "name"))


def check_run_dir(run_dir: Path, cfg: ExperimentConfig) -> None:
    """A folder that holds a run of another config is never reused (nor overwritten)."""
    saved = Path(run_dir) / "config.yaml"
    if saved.is_file() and not same_config(saved.read_text(), cfg):
        raise ConfigError(f"{run_dir} holds a run of another config; choose another --out "
                          "(nothing there is overwritten)")


def resume_changes(run_dir: Path, cfg: ExperimentConfig) -> dict[str, list]:
    """The keys in which ``cfg`` differs from the run's own ``config.yaml``, all result-neutral
    (``fedsim.config.RESULT_NEUTRAL``; or more ``rounds``, which continue the same run):
    key → [before, now]. Any other difference is an error — a resumed run must be the run its
    folder records, or the record no longer describes the result."""
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


def record_config(plans: list[RunPlan], run_dir: Path, cfg: ExperimentConfig, resume: bool) -> None:
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


def prepare_initial_states(plans: list[RunPlan], progress: Progress | None = None) -> None:
    """Train and cache the ``init: pretrained | fm`` states once, here, before the ranks start
    (each rank then loads the cached file); ``progress`` is told what trains."""
    for plan in plans:
        prepare_initial_state(plan.cfg, progress)


def prepare(config: str | Path | ExperimentConfig | None = None, overrides: Sequence[str] = (), *,
            nproc: int | None = None, resume: bool = False, max_restarts: int = 0, run_dir: str | Path | None = None,
            progress: Progress | None = None, torchrun: bool | None = None) -> Experiment:
    """Resolve and check the experiment, then make it ready to launch, in this order (a bad
    value is one line before anything is written):

    the config (:func:`resolve_config`) → the ranks (``nproc``: 1 to the silos to place; default
    :func:`default_nproc`) and ``max_restarts`` (≥ 0) → the output folder can be written → the run
    folder: with ``run_dir``, that folder, continuing what an earlier attempt of the same config
    left there (one holding another config is refused); else a fresh OUTPUT_DIR/NAME(-n), or with
    ``resume`` OUTPUT_DIR/NAME continued from its checkpoint (its config.yaml may differ only in
    result-neutral keys) → the plans (the main run and its ``compare_with`` baselines) →
    ``config.yaml`` → the ``init: pretrained | fm`` states, trained and cached here.

    Under torchrun (``torchrun``: None detects it) only the checks run here; rank 0 chooses the
    folder and makes the plans once the job has formed (:func:`launch`)."""
    cfg, topology = resolve_config(config, overrides)
    if launched_by_torchrun() if torchrun is None else torchrun:
        check_output_dir(cfg.output_dir)
        if resume:  # every rank refuses a changed config alike, before the group forms
            resume_changes(run_dir_for(cfg, True), cfg)
        return Experiment(cfg, topology, None, resume, torchrun=True, progress=progress)
    nproc = default_nproc(cfg, topology.num_silos) if nproc is None else nproc
    if nproc < 1 or nproc > topology.num_silos:
        raise ConfigError(f"--nproc {nproc}: choose between 1 and the {topology.num_silos} silo(s) to place "
                          "(or leave it out: one rank per GPU, else per CPU core)")
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts {max_restarts}: give a number >= 0")
    check_output_dir(cfg.output_dir if run_dir is None else run_dir)
    if run_dir is not None:
        folder, resume = Path(run_dir), True  # whatever an earlier attempt left there continues
        check_run_dir(folder, cfg)
    else:
        folder = run_dir_for(cfg, resume)
    plans = experiment_plans(cfg, folder, nproc, resume=resume)
    if run_dir is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(cfg.to_yaml())
    else:
        record_config(plans, folder, cfg, resume)
    prepare_initial_states(plans, progress)
    return Experiment(cfg, topology, nproc, resume, max_restarts, folder, plans, progress=progress)


# ---- launch: the ranks -------------------------------------------------------------------------

def launch(exp: Experiment) -> ExperimentResult | None:
    """Run the prepared experiment's ranks → its result (not yet :func:`finish`-ed). Spawned ranks
    without restarts run rank 0 in this process; with ``max_restarts`` or ``faults.on_crash:
    exclude`` every rank is a child this process watches (:func:`run_with_restarts`). Under
    torchrun this process is one rank: the result on rank 0, None on the others."""
    if exp.torchrun:
        return _launch_torchrun(exp)
    assert exp.run_dir is not None and exp.nproc is not None  # prepare made them
    if exp.max_restarts == 0 and exp.cfg.faults.on_crash != "exclude":
        return ExperimentResult(exp.run_dir, exp.plans, run_here(exp))
    summaries, plans = run_with_restarts(exp)
    return ExperimentResult(exp.run_dir, plans, summaries)


def launch_together(experiments: Sequence[Experiment]) -> list[ExperimentResult]:
    """Several prepared experiments of the same rank count in one process group, one after another
    (one start of the ranks for them all; the ranks are children of this process, so several
    groups may run at once from threads). Each continues what its folder holds (resume); no
    restarts: a rank that dies or stalls raises :class:`~fedsim.errors.SiloFailure`."""
    if not experiments:
        return []
    nproc = experiments[0].nproc
    if nproc is None or any(e.nproc != nproc or e.torchrun for e in experiments):
        raise ValueError("launch_together: experiments prepared for the same number of spawned ranks")
    jobs = [p for e in experiments for p in e.plans]
    # resume: each plan continues from its own resume_from, chosen in prepare (None: from round 0)
    summaries = spawn(run_jobs, nproc, jobs, True, device=experiments[0].cfg.device,
                      timeout_s=max(e.cfg.timeout_s for e in experiments))[0]
    out, at = [], 0
    for e in experiments:
        assert e.run_dir is not None
        out.append(ExperimentResult(e.run_dir, e.plans, summaries[at:at + len(e.plans)]))
        at += len(e.plans)
    return out


def run_here(exp: Experiment) -> list[dict[str, Any]]:
    """Without restarts, rank 0 runs in this process (see spawn_here: one interpreter fewer,
    the other ranks forked on the CPU); a rank that dies or stalls ends in the failure report."""
    assert exp.run_dir is not None and exp.nproc is not None
    try:
        return spawn_here(run_jobs, exp.nproc, exp.plans, exp.resume, device=exp.cfg.device,
                          timeout_s=exp.cfg.timeout_s)
    except SiloFailure as exc:
        raise failure_report(exc, exp.plans[0].topology.num_silos, exp.nproc, exp.run_dir) from None


def run_with_restarts(exp: Experiment) -> tuple[list[dict[str, Any]], list[RunPlan]]:
    """Spawn the ranks for the experiment's plans in child processes (this one only watches them,
    so it survives any rank's death); when a rank dies or stalls, restart them from the last
    checkpoint (one line on stderr each time) as long as no silo's ranks crashed more than
    ``max_restarts`` times. Past that, ``faults.on_crash: exclude`` marks those silos failed
    from the round they were lost in and the rest finish on the remaining ranks; ``resume``
    stops with the failure report. Returns (summaries, the plans that finished)."""
    assert exp.run_dir is not None and exp.nproc is not None
    cfg, plans, run_dir, nproc, resume, max_restarts = (exp.cfg, exp.plans, exp.run_dir, exp.nproc, exp.resume,
                                                        exp.max_restarts)
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


def _cause(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "…"


def failure_report(exc: SiloFailure, num_silos: int, nproc: int, run_dir: Path, max_restarts: int = 0,
                   crashes: Counter[int] | None = None) -> SiloFailure:
    """Name the silos that were lost and what was saved, so the user can resume."""
    placement = Placement(num_silos, nproc)
    silos = sorted(s for r in exc.ranks for s in placement.silos_on(r))
    done = latest_checkpoint(run_dir)
    saved = f"rounds 0..{done} are checkpointed in {run_dir}" if done is not None else "no round had finished"
    tried = f" after {max(crashes[s] for s in silos) - 1} restart(s)" if crashes and max_restarts else ""
    return SiloFailure(
        f"silo(s) {', '.join(map(str, silos))} failed or stalled{tried} — {exc}; {saved}; continue with --resume "
        "(or run with --max-restarts N; faults.on_crash: exclude leaves a silo that cannot come back out)",
        ranks=exc.ranks)


def torchrun_run_dir(cfg: ExperimentConfig, resume: bool) -> tuple[Path, bool]:
    """(the run folder, whether to resume) of this torchrun worker group. After a restart
    (``torchrun --max-restarts``; TORCHELASTIC_RESTART_COUNT > 0) it is the folder the first
    attempt of the same job (TORCHELASTIC_RUN_ID) started, continued from its checkpoint."""
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


def _launch_torchrun(exp: Experiment) -> ExperimentResult | None:
    """This process as one rank of the torchrun job: rank 0 chooses the folder and makes the plans
    (the part of :func:`prepare` that needs the job) and hands them to every rank."""
    cfg = exp.cfg
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)

    def job(ctx):
        plans, resume = None, exp.resume
        if ctx.rank == 0:  # the plan is resolved once and handed to every rank
            run_dir, resume = torchrun_run_dir(cfg, exp.resume)
            plans = experiment_plans(cfg, run_dir, ctx.world_size, resume=resume, attempt=attempt)
            mark_torchrun_job(run_dir)
            if not attempt or exp.resume:  # a torchrun restart continues the config its first attempt wrote
                record_config(plans, run_dir, cfg, resume)
            prepare_initial_states(plans, exp.progress)
        plans, resume = broadcast_object((plans, resume))
        return plans, run_jobs(ctx, plans, resume), ctx.rank

    plans, summaries, rank = join_torchrun(job, device=cfg.device, timeout_s=cfg.timeout_s)
    if rank != 0:
        return None
    return ExperimentResult(Path(plans[0].run_dir), plans, summaries)


# ---- finish: after the distributed part --------------------------------------------------------

def finish(result: ExperimentResult) -> ExperimentResult:
    """After the ranks (in this process, rank 0 under torchrun): the comparison plot of the runs
    (comparison.png, with ``compare_with``) and the downstream stage (downstream.json, with
    ``downstream.enabled``) → the result, with its downstream rows."""
    plans, run_dir = result.plans, result.run_dir
    cfg = plans[0].cfg
    if len(plans) > 1:
        plot_runs([p.run_dir for p in plans], run_dir / "comparison.png", [p.label for p in plans])
    if cfg.downstream.enabled:
        result.downstream = downstream_stage(plans)
        (run_dir / "downstream.json").write_text(json.dumps(rows_to_json(result.downstream), indent=2))
    return result


def downstream_stage(plans: list[RunPlan]) -> list[dict[str, Any]]:
    """Fine-tune from random weights and from every run's foundation Θ on the same downstream data."""
    cfg = plans[0].cfg
    inits: dict[str, Any] = {"random": None}
    for plan in plans:
        if plan.forms_foundation:
            inits[plan.label] = str(Path(plan.run_dir) / "foundation.pt")
    return compare_initializations(inits, cfg.model, cfg.downstream, cfg.data.image_size, cfg.seed)


def run(config: str | Path | ExperimentConfig | None = None, overrides: Sequence[str] = (), **options: Any
        ) -> ExperimentResult | None:
    """:func:`prepare` (``options``: its keywords), :func:`launch`, :func:`finish` → the result
    (None on a torchrun rank other than 0)."""
    result = launch(prepare(config, overrides, **options))
    return None if result is None else finish(result)
