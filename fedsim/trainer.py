"""The round loop of one rank, assembled from its parts: the federation (silos, data, messages),
the algorithm, and components with one job each — evaluation, the network clock, checkpoints,
fault injection — and the output callbacks (:mod:`fedsim.callbacks`).

    plan = fedsim.plan.build_plan(cfg, run_dir, world_size)     # in the parent, once
    spawn(run_rank, world_size, plan)                          # every rank: this loop

This module is the one place that reads the :class:`fedsim.plan.RunPlan`: each ``build_*``
function below hands one component its own config section(s) and the few resolved values it
uses (the torchtitan pattern); no component receives the plan.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from fedsim.algorithms import algorithm_class
from fedsim.callbacks import CallbackList, RoundReport
from fedsim.callbacks.default import default_callbacks
from fedsim.callbacks.jsonl import read_records
from fedsim.checkpoint import AttemptLog, Checkpointer, latest_checkpoint
from fedsim.data.rank import load_rank_data
from fedsim.distributed import all_reduce_sum, gather_objects, is_distributed, set_determinism
from fedsim.errors import FedsimError, SiloFailure
from fedsim.evaluation import Evaluator
from fedsim.faults import FaultInjector, FaultSchedule, rejoin_from_theta
from fedsim.federation import Federation
from fedsim.fminit import initial_state
from fedsim.models import initial_model_factory
from fedsim.models.plugin import check_model
from fedsim.netmodel.runclock import RunClock
from fedsim.summary import build_summary, round_row
from fedsim.transport import SERVER, saveable_state


def run_jobs(ctx, plans: list, resume: bool = False) -> list[dict[str, Any] | None]:
    """Several runs in the same process group, one after another (main run, then baselines).
    With ``resume`` a run that already finished all its rounds is not run again and one with a
    checkpoint continues from it (``plan.resume_from``, chosen before the ranks started)."""
    out = []
    for plan in plans:
        done = Path(plan.run_dir) / "summary.json"
        last = plan.resume_from if resume else None
        if resume and done.is_file() and last == plan.cfg.rounds - 1:
            out.append(json.loads(done.read_text()) if ctx.rank == 0 else None)
            continue
        Path(plan.run_dir).mkdir(parents=True, exist_ok=True)
        plan.resume = resume and last is not None
        out.append(run_rank(ctx, plan))
    return out


def build_federation(plan, rank: int, device: torch.device, data, model_factory) -> Federation:
    """This rank's federation: the config (what algorithms read), the resolved scenario, training
    graph, placement and privacy plan, this rank's data and its silos' initial models."""
    return Federation(plan.cfg, plan.scenario, plan.topology, plan.placement, rank, device, data, model_factory,
                      plan.privacy)


def build_evaluator(plan, fed: Federation, data) -> Evaluator:
    """The scorer of this rank: the ``train:`` section's evaluation keys, the rounds, the seed,
    the data kind and whether the run forms Θ."""
    cfg = plan.cfg
    return Evaluator(fed, data, plan.forms_foundation, cfg.train, cfg.rounds, cfg.seed, cfg.data.kind)


def build_faults(plan, rank: int, spec: str | None = None) -> FaultInjector:
    """The fault injector of ``rank``: the ``faults:`` section, its schedule over the training
    graph's silos (with the silos already lost to crashes), the seed, whether a silo coming back
    loads Θ, and which start of the process group this is (drills; ``spec``: the drill, default
    ``FEDSIM_FAULT``)."""
    cfg = plan.cfg
    schedule = FaultSchedule(cfg, plan.topology.num_silos, plan.failed)
    rejoin_theta = rejoin_from_theta(cfg, plan.forms_foundation, plan.scenario.via_server)
    return FaultInjector(cfg.faults, schedule, cfg.seed, rejoin_theta, rank, plan.attempt, spec)


def build_callbacks(plan, rank: int) -> CallbackList:
    """The output writers of ``rank``: the ``log:`` section, the run folder, the silos the rank
    hosts, and the run's name, label, rounds and task."""
    cfg = plan.cfg
    return default_callbacks(cfg.log, plan.run_dir, rank, plan.placement.silos_on(rank), name=cfg.name,
                             label=plan.label, rounds=cfg.rounds, task=cfg.task)


def build_clock(plan, fed: Federation, algo, state: dict[str, Any] | None = None) -> RunClock:
    """The simulated network clock: the ``net:`` and ``model:`` sections, the graph the scenario
    charges (CFL: the star through the server), τ, and the rank's federation and algorithm."""
    cfg = plan.cfg
    return RunClock(cfg.net, cfg.model, plan.scenario.clock_graph(plan.topology), plan.topology.num_silos,
                    plan.scenario.via_server, cfg.train.local_steps, fed, algo, state)


def run_rank(ctx, plan) -> dict[str, Any] | None:
    """The whole run as seen by one rank. Returns the summary on rank 0."""
    cfg = plan.cfg
    entered = time.perf_counter()
    set_determinism(cfg.seed)
    data = load_rank_data(plan, ctx.rank)
    fed = build_federation(plan, ctx.rank, ctx.device, data,
                           initial_model_factory(cfg, data.num_classes, initial_state(cfg, ctx), data.in_channels))
    algorithm = algorithm_class(cfg.algorithm)
    if cfg.task == "classification":  # a plug-in that does not fit is one line, before any training
        needs = cfg.algorithm if algorithm.needs_features else None
        check_model(fed.scratch_model(), data.test.image_batch(slice(0, 2)).to(ctx.device), data.num_classes, needs,
                    cfg.model.name, algorithm.feature_grid(cfg))
    algo = algorithm(fed)
    evaluator = build_evaluator(plan, fed, data)
    checkpoints = Checkpointer(plan.run_dir, fed, algo, cfg.checkpoint, cfg.rounds)
    faults = build_faults(plan, ctx.rank)
    callbacks = build_callbacks(plan, ctx.rank)

    start_round, clock_state, history = 0, None, []
    resume_round = plan.resume_from if plan.resume else None
    if resume_round is not None:
        clock_state = checkpoints.restore(resume_round)
        start_round = resume_round + 1
        if ctx.rank == 0:  # the summary covers the rounds run before the interruption too

            history = [round_row(recs) for recs in read_records(plan.run_dir, resume_round).values()]
    clock = build_clock(plan, fed, algo, clock_state)
    attempts = AttemptLog(plan.run_dir, resume_round is not None, start_round, ctx.rank == 0, plan.config_changes)
    started = time.perf_counter()
    try:
        callbacks.on_run_start(start_round)
        for k in range(start_round, cfg.rounds):
            round_faults = faults.before_round(k, fed)
            fed.take_exchange_seconds()
            t0 = time.perf_counter()
            losses = algo.round(k)
            round_time = time.perf_counter() - t0
            exchange_s = fed.take_exchange_seconds()
            sim_times = clock.step(k, round_time, round_faults)
            records = _round_records(fed, algo, evaluator, k, losses, round_time,
                                     attempts.before + time.perf_counter() - started, sim_times, round_faults)
            split = {"train_time_s": round_time - exchange_s, "exchange_time_s": exchange_s,
                     "eval_time_s": evaluator.take_seconds()}
            gathered = gather_objects(records)
            t1 = time.perf_counter()
            saved = checkpoints.due(k)  # checkpoint.every; a crash resumes from the last one saved
            if saved:
                checkpoints.save(k, clock.state())
            split["checkpoint_time_s"] = time.perf_counter() - t1
            for rec in records:  # this rank's split of the round (what benchmarks/scale.py tabulates)
                rec.update(split)
            row = None
            if gathered is not None:  # rank 0
                row = round_row([r for part in gathered for r in part])
                history.append(row)
            callbacks.on_round_end(RoundReport(k, records, row))
            attempts.update(time.perf_counter() - started, flush=saved)
        faults.final(cfg.rounds, fed)  # Θ at the end: the aggregate of the last round's silos
        summary = _finish(plan, fed, algo, evaluator, history, ctx.rank)
        if summary is not None:
            summary.update(attempts.summary(time.perf_counter() - started))  # wall time over every attempt
            # start-up inside the rank: data, silos, checkpoint restored (benchmarks/startup.py)
            summary["setup_s"] = started - entered
        callbacks.on_run_end(summary)
        return summary
    except FedsimError:
        raise
    except RuntimeError as exc:
        if is_distributed() and _looks_like_peer_failure(exc):
            raise SiloFailure(
                f"rank {ctx.rank} lost a peer after {cfg.timeout_s:g} s or less "
                f"({str(exc).splitlines()[0][:160]}); last checkpointed round: {latest_checkpoint(plan.run_dir)}"
            ) from None
        raise
    finally:
        callbacks.close()


def _round_records(fed, algo, evaluator, k: int, losses: dict[int, float], round_time: float,
                   wall: float, sim_times: list[float], faults=None) -> list[dict[str, Any]]:
    """This rank's per-silo records of round ``k`` (see :mod:`fedsim.callbacks.jsonl`), with the
    algorithm's own keys (``algo.round_record``); with ``faults``
    (:class:`fedsim.faults.RoundFaults`), whether each silo took part and why not."""
    sent = fed.transport.take_bytes()
    steps = fed.take_grad_steps()
    scores = evaluator.silos(k)
    val_scores = evaluator.silos_validation(k)
    foundation, foundation_val, foundation_union = evaluator.foundation(k)
    records = []
    for i in fed.local_ids:
        rec: dict[str, Any] = {"round": k, "silo": i, "loss": losses.get(i)}
        if i in scores:
            rec["test_loss"], rec["accuracy"] = scores[i]
        if i in val_scores:
            rec["val_accuracy"] = val_scores[i]
        by_dst = {("server" if d == SERVER else str(d)): b for (s, d), b in sorted(sent.items()) if s == i}
        rec["bytes_sent"] = sum(by_dst.values())
        rec["bytes_by_dst"] = by_dst
        if (SERVER, i) in sent:  # what the data-less server sends is booked on the silo receiving it
            rec["bytes_from_server"] = sent[(SERVER, i)]
        rec["grad_steps"] = steps[i]
        rec["round_time_s"] = round_time
        rec["wall_time_s"] = wall
        rec["sim_time_ms"] = sim_times[i]
        rec["foundation_accuracy"] = foundation
        rec.update(foundation_union)  # Θ in and out of the union of the silos' cells (synthetic data)
        if evaluator.val_sets is not None:
            rec["foundation_val_accuracy"] = foundation_val
        rec.update(fed.privacy.record(i))  # ε spent on silo i's data so far (privacy.mode), …
        rec.update(algo.round_record(i))  # e.g. FedEFM's teacher weights and loss parts
        if faults is not None:
            rec["participated"] = i in faults.present
            rec["absent"] = faults.absent.get(i)
            if i in faults.factors:
                rec["compute_factor"] = faults.factors[i]
            if i in faults.local_steps:  # a straggler stopped at the deadline: the steps it finished
                rec["local_steps"] = faults.local_steps[i]
            down = [f"{a}->{b}" for a, b in sorted(faults.down) if i in (a, b)]
            if down:
                rec["links_down"] = down
            if i in faults.corrupted:  # faults.corrupt: its labels or what it sends, this round
                rec["corrupted"], rec["corruption_level"] = faults.corrupted[i]
        records.append(rec)
    return records


def _finish(plan, fed, algo, evaluator, history, rank: int) -> dict[str, Any] | None:
    """The final Θ (saved as foundation.pt), its scores and the summary (rank 0)."""
    final: dict[str, Any] = {}
    theta = evaluator.theta_model() if plan.forms_foundation else None
    if theta is not None and evaluator.val_sets is not None:
        val = evaluator.validation(theta)  # a collective
        if val is not None:
            final["foundation_val_loss"], final["foundation_val_accuracy"] = val
    # EMD share of the compute: seconds in EMD over all ranks / rank-seconds spent in rounds
    emd = all_reduce_sum(torch.tensor([getattr(algo, "emd_seconds", 0.0)], dtype=torch.float64, device=fed.device))
    if rank != 0:
        return None
    if theta is not None:
        final["foundation_loss"], final["foundation_accuracy"] = evaluator.score(theta)
        final.update(evaluator.union_scores(theta), **evaluator.union_counts())  # the same pass, split
        torch.save(saveable_state(theta), Path(plan.run_dir) / "foundation.pt")
    summary = build_summary(plan, history, final)
    summary["emd_seconds"] = emd.item()
    # over the rounds that exchange (FedEFM's round 0 is local training, without EMD)
    busy = plan.world_size * sum(r["round_time_s"] for r in history if algo.exchanges_in(r["round"]))
    summary["emd_share"] = emd.item() / busy if busy else 0.0
    return summary


def _looks_like_peer_failure(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("timed out", "timeout", "connection", "peer", "closed", "broken pipe"))
