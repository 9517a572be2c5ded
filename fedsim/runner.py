"""Run an experiment on this rank: build the silos, loop over rounds, record, checkpoint,
aggregate the foundation model Θ and summarise."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fedsim.algorithms import algorithm_class, build_algorithm
from fedsim.algorithms.base import SERVER
from fedsim.config import ALGORITHMS, ExperimentConfig
from fedsim.distributed import Placement
from fedsim.errors import ConfigError, FedsimError, SiloFailure, TopologyError
from fedsim.records import Recorder, read_records
from fedsim.runtime import Federation, load_state_tensors
from fedsim.topology import MAKE_KINDS, Topology, load_topology, make_topology, parse_topology
from fedsim.transport import saveable_state


def resolve_topology(spec: str) -> Topology:
    """A topology from a file path, a shipped name (``gaia`` → fedsim/topologies/gaia.yaml) or ``KIND:N``."""
    from fedsim.topology import shipped_topologies

    path = Path(spec)
    if path.is_file():
        return load_topology(path)
    if ":" in spec and spec.split(":", 1)[0] in MAKE_KINDS:
        kind, n = spec.split(":", 1)
        try:
            return make_topology(kind, int(n))
        except ValueError:
            raise TopologyError(f"topology {spec!r}: expected KIND:N with an integer N") from None
    shipped = shipped_topologies()
    name = spec[: -len(".yaml")] if spec.endswith(".yaml") else spec
    if name in shipped:
        return load_topology(shipped[name])
    raise TopologyError(
        f"topology {spec!r} not found: give a YAML file, KIND:N ({', '.join(MAKE_KINDS)}), "
        f"or one of the shipped names: {', '.join(sorted(shipped))}"
    )


def forms_foundation(cfg: ExperimentConfig) -> bool:
    """Whether the run ends with a foundation model Θ (the ϑ-weighted average of the silos'
    weights): not across different architectures, nor for algorithms whose silos exchange only
    outputs (their separately trained models share no basin; the score is the silos' mean)."""
    return algorithm_class(cfg.algorithm).shares_weights and not cfg.model.heterogeneous


def scenario_for(cfg: ExperimentConfig) -> str:
    """The scenario to run: the configured one (an error if the algorithm lacks it), else the
    algorithm's own."""
    algo = algorithm_class(cfg.algorithm)
    scenario = cfg.scenario or algo.natural_scenario
    allowed = (algo.natural_scenario, *algo.scenarios)
    if scenario not in allowed:
        raise ConfigError(
            f"algorithm {cfg.algorithm!r} does not run in scenario {scenario!r}; use one of {', '.join(dict.fromkeys(allowed))}"
        )
    if cfg.task not in algo.tasks:
        raise ConfigError(
            f"algorithm {cfg.algorithm!r} does not support task {cfg.task!r}; use one of "
            f"{', '.join(n for n in ALGORITHMS if cfg.task in algorithm_class(n).tasks)} (or task: classification)"
        )
    if cfg.model.heterogeneous and algo.shares_weights:
        raise ConfigError(
            f"algorithm {cfg.algorithm!r} exchanges or averages weights, which needs one architecture on "
            f"every silo; model.per_silo lists {', '.join(dict.fromkeys(cfg.model.per_silo))}: use an "
            "algorithm that exchanges outputs (fedmd, mdhfl) or one model for all silos"
        )
    return scenario


def training_topology(cfg: ExperimentConfig, underlay: Topology) -> Topology:
    """The graph silos actually train on in the chosen scenario.

    CFL relays every model through a data-less server, so each silo reaches every other: a
    complete graph. CLL pools all data on a single silo.
    """
    n = underlay.num_silos
    if cfg.scenario == "cll":
        return parse_topology({"name": "cll", "silos": 1, "edges": []}, "cll")
    if cfg.scenario == "cfl" and n > 1:
        pairs = [[i, j] for i in range(n) for j in range(i + 1, n)]
        return parse_topology(
            {"name": f"{underlay.name}-cfl", "silos": [{"id": s.id, "name": s.name} for s in underlay.silos],
             "directed": False, "edges": pairs},
            underlay.source,
        )
    if cfg.scenario == "dfl" and not underlay.is_strongly_connected():
        raise TopologyError(f"{underlay.source}: the graph is not strongly connected; DFL needs every silo to reach every other")
    return underlay


def check_config_against_topology(cfg: ExperimentConfig, topology: Topology) -> None:
    """Settings that must agree with the silo count (a clear error instead of a crash later)."""
    n = topology.num_silos
    if cfg.accumulation_status is not None and len(cfg.accumulation_status) != n:
        raise ConfigError(
            f"accumulation_status has {len(cfg.accumulation_status)} entries but topology "
            f"{topology.name!r} has {n} silos"
        )
    if cfg.accumulation_status is not None and not any(cfg.accumulation_status):
        raise ConfigError("accumulation_status is 0 for every silo: nothing would form the foundation model")
    domains = getattr(cfg.data, "domains", None)
    if isinstance(domains, list) and cfg.scenario != "cll" and len(domains) not in (0, n):
        raise ConfigError(f"data.domains lists {len(domains)} silos but topology {topology.name!r} has {n}")


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def latest_checkpoint(run_dir: Path) -> int | None:
    marker = run_dir / "checkpoints" / "latest.json"
    if not marker.is_file():
        return None
    return int(json.loads(marker.read_text())["round"])


class NetworkClock:
    """Simulated network time per silo (SPEC §5): the delay model applied to the graph trained
    on. DFL follows the topology (FedEFM: a round trip to each in-neighbour and back), CFL the
    star through a data-less server (up, then down), standalone and CLL only compute."""

    def __init__(self, cfg: ExperimentConfig, topology: Topology, model_bits: float, compute_ms: float,
                 round_trip: bool, times: list[float] | None = None) -> None:
        from fedsim.netmodel import DelayModel, SimClock

        self.compute_ms = compute_ms
        self.model = DelayModel(model_bits=model_bits, compute_ms=compute_ms, access_gbps=cfg.net.access_gbps)
        self.scenario = cfg.scenario
        self.n = topology.num_silos
        self.clock = None
        if cfg.scenario == "dfl" and topology.arcs:
            self.clock = SimClock(topology, self.model, round_trip=round_trip)
        elif cfg.scenario == "cfl":
            server = topology.num_silos
            star = parse_topology({"name": "cfl-star", "silos": server + 1, "directed": False,
                                   "edges": [[i, server] for i in range(server)]}, "cfl-star")
            self.clock = SimClock(star, self.model)
        self.times = list(times) if times is not None else [0.0] * self.n
        if self.clock is not None and times is not None:
            self.clock.times[: self.n] = times
            if cfg.scenario == "cfl":
                self.clock.times[self.n] = max(times)

    def step(self, active: list[tuple[int, int]] | None) -> list[float]:
        if self.clock is None or active == []:
            if self.clock is not None:  # local work only: everyone just computes
                self.clock.step(active_arcs=[])
                self.times = self.clock.times[: self.n].tolist()
            else:
                self.times = [t + self.compute_ms for t in self.times]
        elif self.scenario == "cfl":
            self.clock.step()  # upload to the server
            self.clock.step()  # download of the aggregate
            self.times = self.clock.times[: self.n].tolist()
        else:
            self.times = self.clock.step(active_arcs=active)[: self.n].tolist()
        return self.times


def model_bits(model: torch.nn.Module) -> float:
    return float(sum(t.numel() * t.element_size() * 8 for t in model.state_dict().values()))


def config_model_bits(cfg: ExperimentConfig) -> float:
    """Bits of one copy of ``cfg.model``, counted as the trainer counts them (for delay models
    built before a run)."""
    from fedsim.data import NUM_CLASSES
    from fedsim.models import build_model

    # heterogeneous models: the largest, so every rank's clock charges the same
    names = dict.fromkeys(cfg.model.per_silo or [cfg.model.name])
    return max(model_bits(build_model(replace(cfg.model, name=n, per_silo=[]), NUM_CLASSES)) for n in names)


def baseline_config(cfg: ExperimentConfig, algorithm: str) -> ExperimentConfig:
    """The same experiment with another algorithm (its own natural scenario), for comparison."""
    import copy

    other = copy.deepcopy(cfg)
    other.algorithm, other.scenario, other.compare_with = algorithm, None, []
    other.name = f"{cfg.name}/{algorithm}"
    other.scenario = scenario_for(other)
    return other


def run_jobs(ctx, jobs: list[tuple[ExperimentConfig, str]], resume: bool) -> list[dict[str, Any] | None]:
    """Several runs in the same process group, one after another (main run, then baselines).
    With ``resume`` a run that already finished all its rounds is not run again."""
    out = []
    for cfg, run_dir in jobs:
        done = Path(run_dir) / "summary.json"
        if resume and done.is_file() and latest_checkpoint(Path(run_dir)) == cfg.rounds - 1:
            out.append(json.loads(done.read_text()) if ctx.rank == 0 else None)
            continue
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        out.append(run_rank(ctx, cfg, run_dir, resume and latest_checkpoint(Path(run_dir)) is not None))
    return out


def initial_model_factory(cfg: ExperimentConfig, num_classes: int, init_state: dict | None, in_channels: int = 1):
    """The silos' model factory: a classifier (``task: classification``) or a U-Net whose encoder
    is ``model`` (``task: segmentation``), loaded with the common initial state when there is one."""
    from fedsim.fminit import NUM_SEG_CLASSES, apply_initial_state
    from fedsim.models import build_model, build_segmenter

    def factory(silo: int | None = None):
        if cfg.task == "segmentation":
            model = build_segmenter(cfg.model.for_silo(silo), NUM_SEG_CLASSES, in_channels)
        else:
            model = build_model(cfg.model.for_silo(silo), num_classes, in_channels)
        if init_state is not None:
            apply_initial_state(model, init_state, cfg.init_from or f"init: {cfg.init}")
        return model

    return factory


def run_rank(ctx, cfg: ExperimentConfig, run_dir: str, resume: bool) -> dict[str, Any] | None:
    """The whole run as seen by one rank. Returns the summary on rank 0."""
    from fedsim.data import load_federated
    from fedsim.distributed import set_determinism
    from fedsim.fminit import initial_state

    run_path = Path(run_dir)
    set_determinism(cfg.seed)
    underlay = resolve_topology(cfg.topology)
    topology = training_topology(cfg, underlay)
    check_config_against_topology(cfg, underlay)
    if topology.num_silos < ctx.world_size:
        raise ConfigError(
            f"{ctx.world_size} ranks but only {topology.num_silos} silo(s) to place; "
            f"launch with at most {topology.num_silos} processes"
        )
    masks = cfg.task == "segmentation"
    if cfg.scenario == "cll":
        from fedsim.data import SiloDataset

        data = load_federated(cfg.data, underlay.num_silos, cfg.seed, masks=masks)
        train_sets = [SiloDataset.concat(list(data.train), name="pooled")]
    else:  # each rank builds only the silos it hosts (bit-identical to building them all)
        local = Placement(topology.num_silos, ctx.world_size).silos_on(ctx.rank)
        data = load_federated(cfg.data, underlay.num_silos, cfg.seed, silos=local, masks=masks)
        train_sets = data.train
    fed = Federation(
        cfg, topology, ctx.rank, ctx.world_size, ctx.device, train_sets, data.test, data.num_classes,
        initial_model_factory(cfg, data.num_classes, initial_state(cfg, ctx), data.in_channels),
    )
    if cfg.task == "classification":  # a plug-in that does not fit is one line, before any training
        from fedsim.models.plugin import check_model

        needs = cfg.algorithm if algorithm_class(cfg.algorithm).needs_features else None
        grid = cfg.emd.grid if cfg.algorithm == "fedefm" and cfg.emd.backend != "uniform" else None
        check_model(fed.scratch_model(), data.test.images[:2].to(ctx.device), data.num_classes, needs,
                    cfg.model.name, grid)
    if cfg.scenario == "cll":
        for silo in fed.silos.values():
            silo.status = 1
    algo = build_algorithm(cfg.algorithm, fed)

    start_round = 0
    resume_round = latest_checkpoint(run_path) if resume else None
    if resume_round is not None:
        _load_checkpoint(fed, algo, run_path, resume_round)
        start_round = resume_round + 1
    recorder = Recorder(run_path, fed.local_ids, resume_round)
    progress = _Progress(ctx.rank == 0, cfg.rounds, start_round, cfg.name,
                         "dice" if cfg.task == "segmentation" else "acc")
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    clock = None
    if resume_round is not None:
        saved = json.loads((run_path / "checkpoints" / "latest.json").read_text())
        clock = _make_clock(cfg, fed, algo, saved["compute_ms"], saved["sim_times"])
        if ctx.rank == 0:  # the summary covers the rounds run before the interruption too
            history = [_round_row(recs) for recs in read_records(run_path, resume_round).values()]
    try:
        for k in range(start_round, cfg.rounds):
            _inject_fault(ctx.rank, k)
            t0 = time.perf_counter()
            losses = algo.round(k)
            round_time = time.perf_counter() - t0
            if clock is None:
                clock = _make_clock(cfg, fed, algo, _measured_compute_ms(cfg, fed, round_time), None)
            active = fed.active_arcs(k) if algo.exchanges_in(k) else []
            sim_times = clock.step(active)
            records = _round_records(fed, k, losses, round_time, time.perf_counter() - started, sim_times)
            foundation = _foundation_eval(fed, k)
            for rec in records:
                rec["foundation_accuracy"] = foundation
            recorder.write(records)
            all_records = _gather(records, ctx.rank)
            _save_checkpoint(fed, algo, run_path, k, {"compute_ms": clock.compute_ms, "sim_times": sim_times})
            if ctx.rank == 0:
                row = _round_row(all_records)
                history.append(row)
                progress.update(row)
    except FedsimError:
        progress.close()
        raise
    except RuntimeError as exc:
        progress.close()
        if dist.is_initialized() and _looks_like_peer_failure(exc):
            done = latest_checkpoint(run_path)
            raise SiloFailure(
                f"rank {ctx.rank} lost a peer after {cfg.timeout_s:g} s or less "
                f"({str(exc).splitlines()[0][:160]}); last checkpointed round: {done}"
            ) from None
        raise
    progress.close()

    theta = fed.aggregate() if forms_foundation(cfg) else None
    # EMD share of the compute: seconds in EMD over all ranks / rank-seconds spent in rounds
    emd = torch.tensor([getattr(algo, "emd_seconds", 0.0)], dtype=torch.float64, device=ctx.device)
    if dist.is_initialized():
        dist.all_reduce(emd)
    if ctx.rank != 0:
        return None
    f_loss = f_acc = None
    if theta is not None:
        foundation = fed.scratch_model()
        load_state_tensors(foundation, theta)
        f_loss, f_acc = fed.evaluate(foundation)
        torch.save(saveable_state(foundation), run_path / "foundation.pt")
    summary = _summary(cfg, topology, ctx.world_size, history, f_loss, f_acc, time.perf_counter() - started)
    summary["emd_seconds"] = emd.item()
    # over the rounds that exchange (FedEFM's round 0 is local training, without EMD)
    busy = ctx.world_size * sum(r["round_time_s"] for r in history if algo.exchanges_in(r["round"]))
    summary["emd_share"] = emd.item() / busy if busy else 0.0
    (run_path / "summary.json").write_text(json.dumps(summary, indent=2))
    _write_csv(run_path / "summary.csv", summary["silos"])
    return summary


def _evaluating(cfg: ExperimentConfig, k: int) -> bool:
    """Every ``train.eval_every`` rounds and always in the last (eval_every 0: only the last)."""
    every = cfg.train.eval_every
    return k == cfg.rounds - 1 or bool(every) and k % every == 0


def _foundation_eval(fed: Federation, k: int) -> float | None:
    """Accuracy of this round's Θ (the all-reduce aggregate) on the test set, in eval rounds;
    the same on every rank (each evaluates the same Θ: no extra message)."""
    if not (fed.cfg.train.eval_foundation and _evaluating(fed.cfg, k) and forms_foundation(fed.cfg)):
        return None
    theta = fed.aggregate()
    model = fed.scratch_model()
    load_state_tensors(model, theta)
    return fed.evaluate(model)[1]


def _inject_fault(rank: int, k: int) -> None:
    """Fault injection for tests and drills: FEDSIM_FAULT="stall:RANK:ROUND" makes that rank
    hang at the start of that round, "die:RANK:ROUND" makes it exit abruptly."""
    spec = os.environ.get("FEDSIM_FAULT")
    if not spec:
        return
    kind, r, when = spec.split(":")
    if int(r) != rank or int(when) != k:
        return
    if kind == "die":
        os._exit(9)
    time.sleep(10**6)


def _measured_compute_ms(cfg: ExperimentConfig, fed: Federation, round_seconds: float) -> float:
    """``net.compute_ms``, or this run's own: the first round's wall time per silo (the slowest
    rank's, so every rank's clock agrees)."""
    if cfg.net.compute_ms is not None:
        return cfg.net.compute_ms
    value = torch.tensor([round_seconds * 1e3 / max(len(fed.silos), 1)], dtype=torch.float64)
    if dist.is_initialized():
        value = value.to(fed.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


def _make_clock(cfg, fed: Federation, algo, compute_ms: float, times) -> NetworkClock:
    bits = cfg.net.model_bits or algo.message_bits() or (
        config_model_bits(cfg) if cfg.model.heterogeneous else model_bits(next(iter(fed.silos.values())).model))
    return NetworkClock(cfg, fed.topology, bits, compute_ms, round_trip=algo.round_trip, times=times)


def _looks_like_peer_failure(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("timed out", "timeout", "connection", "peer", "closed", "broken pipe"))


def _round_records(fed: Federation, k: int, losses: dict[int, float], round_time: float,
                   wall: float, sim_times: list[float]) -> list[dict[str, Any]]:
    sent = fed.transport.take_bytes()
    records = []
    evaluate_now = _evaluating(fed.cfg, k)
    for i in fed.local_ids:
        rec: dict[str, Any] = {"round": k, "silo": i, "loss": losses.get(i)}
        if evaluate_now:
            rec["test_loss"], rec["accuracy"] = fed.evaluate(fed.silos[i].model)
        by_dst = {("server" if d == SERVER else str(d)): b for (s, d), b in sorted(sent.items()) if s == i}
        rec["bytes_sent"] = sum(by_dst.values())
        rec["bytes_by_dst"] = by_dst
        rec["round_time_s"] = round_time
        rec["wall_time_s"] = wall
        rec["sim_time_ms"] = sim_times[i]
        records.append(rec)
    # Bytes the data-less server sends are booked on the silo that receives them.
    for (s, d), b in sent.items():
        if s == SERVER:
            for rec in records:
                if rec["silo"] == d:
                    rec["bytes_from_server"] = b
    return records


def _gather(records: list[dict[str, Any]], rank: int) -> list[dict[str, Any]]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return records
    out: list[Any] = [None] * dist.get_world_size() if rank == 0 else None  # type: ignore[assignment]
    dist.gather_object(records, out, dst=0)
    return [r for part in out for r in part] if rank == 0 else []


def _round_row(records: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [r["accuracy"] for r in records if r.get("accuracy") is not None]
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    return {
        "round": records[0]["round"],
        "loss": sum(losses) / len(losses) if losses else None,
        "accuracy": sum(accs) / len(accs) if accs else None,
        "bytes": sum(r["bytes_sent"] + r.get("bytes_from_server", 0) for r in records),
        "round_time_s": max(r["round_time_s"] for r in records),
        "sim_time_ms": max(r["sim_time_ms"] for r in records),
        "foundation_accuracy": records[0].get("foundation_accuracy"),
        "silos": {r["silo"]: r for r in records},
    }


def _save_checkpoint(fed: Federation, algo, run_path: Path, k: int, extra: dict[str, Any]) -> None:
    ckpt = run_path / "checkpoints"
    round_dir = ckpt / f"round_{k}"
    round_dir.mkdir(parents=True, exist_ok=True)
    for i, silo in fed.silos.items():
        _atomic_save(
            {
                "round": k,
                "model": saveable_state(silo.model, fed.device),
                "optimizer": silo.optimizer.state_dict(),
                "batches": silo.batches.state_dict(),
                "algorithm": algo.silo_state(i),
            },
            round_dir / f"silo_{i}.pt",
        )
    if dist.is_initialized():
        dist.barrier()
    if fed.rank == 0:
        _atomic_write(json.dumps({"round": k, **extra}), ckpt / "latest.json")
        previous = ckpt / f"round_{k - 1}"
        if previous.is_dir():
            for f in previous.iterdir():
                f.unlink()
            previous.rmdir()


def _load_checkpoint(fed: Federation, algo, run_path: Path, k: int) -> None:
    round_dir = run_path / "checkpoints" / f"round_{k}"
    for i, silo in fed.silos.items():
        path = round_dir / f"silo_{i}.pt"
        if not path.is_file():
            raise FedsimError(f"{path}: checkpoint missing; was the run started with a different topology?")
        state = torch.load(path, map_location=fed.device, weights_only=False)
        silo.model.load_state_dict(state["model"])
        silo.optimizer.load_state_dict(state["optimizer"])
        silo.batches.load_state_dict(state["batches"])
        algo.load_silo_state(i, state["algorithm"])


def _summary(cfg, topology, world_size, history, f_loss, f_acc, wall) -> dict[str, Any]:
    last = history[-1] if history else {"silos": {}}
    silos = []
    for i, rec in sorted(last["silos"].items()):
        silos.append({"silo": i, "name": topology.silos[i].name, "model": cfg.model.for_silo(i).name,
                      "accuracy": rec.get("accuracy"),
                      "loss": rec.get("loss"), "bytes_sent_last_round": rec["bytes_sent"]})
    total_bytes = sum(r["bytes"] for r in history)
    summary = {
        "name": cfg.name,
        "algorithm": cfg.algorithm,
        "scenario": cfg.scenario,
        "topology": topology.name,
        "num_silos": topology.num_silos,
        "world_size": world_size,
        "rounds": cfg.rounds,
        "seed": cfg.seed,
        "foundation_accuracy": f_acc,
        "foundation_loss": f_loss,
        "mean_silo_accuracy": last.get("accuracy"),
        "total_bytes": total_bytes,
        "bytes_per_round": total_bytes / max(len(history), 1),
        "wall_time_s": wall,
        "round_time_s": [r["round_time_s"] for r in history],
        "sim_time_ms": [r["sim_time_ms"] for r in history],
        "accuracy_by_round": [r["accuracy"] for r in history],
        "foundation_accuracy_by_round": [r["foundation_accuracy"] for r in history],
        "silos": silos,
        "task": cfg.task,
        # what the *accuracy* fields hold: test accuracy, or mean foreground Dice (segmentation)
        "metric": "dice" if cfg.task == "segmentation" else "accuracy",
        "init": "file" if cfg.init_from else cfg.init,
    }
    if cfg.task == "segmentation":  # the same numbers under their own names
        summary.update(foundation_dice=f_acc, mean_silo_dice=summary["mean_silo_accuracy"],
                       dice_by_round=summary["accuracy_by_round"],
                       foundation_dice_by_round=summary["foundation_accuracy_by_round"])
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    if not rows:
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


class _Progress:
    """A rich progress bar on rank 0 only: round, loss, accuracy, MB sent."""

    def __init__(self, enabled: bool, rounds: int, start: int, name: str, metric: str = "acc") -> None:
        self.bar = None
        self.metric = metric
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), transient=False,
        )
        self.task = self.bar.add_task(name, total=rounds, completed=start, stats="")
        self.bar.start()

    def update(self, row: dict[str, Any]) -> None:
        if self.bar is None:
            return
        acc = f"{self.metric} {row['accuracy']:.3f}" if row["accuracy"] is not None else ""
        if row.get("foundation_accuracy") is not None:
            acc += f"  Θ {row['foundation_accuracy']:.3f}"
        loss = f"loss {row['loss']:.3f}" if row["loss"] is not None else ""
        self.bar.update(self.task, advance=1, stats=f"{loss}  {acc}  {row['bytes'] / 1e6:.2f} MB")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
