"""Faults and participation, one component of the round loop: which silos take part in a round,
which links are down and who is slow — simulated, seeded and declared in the config
(``faults:``) — and the drills that make a rank really die or stall.

A round k has a set of *present* silos. An absent silo does not train, send or receive; its
ϑ_i is 0 in every aggregate of the round (Θ included); its neighbours renormalise over the silos
they hear. Why a silo is absent (the ``absent`` field of ``metrics/silo_<i>.jsonl``):

* ``dropout`` — a ``faults.dropout`` window (``{silo, start, end}``, rounds inclusive, ``end:
  null`` for good);
* ``crashed`` — its rank crashed more often than ``--max-restarts`` allows with
  ``faults.on_crash: exclude``; it is left out from the round it was lost in (``plan.failed``);
* ``not_sampled`` — partial participation: each round a seeded random ``faults.participation``
  fraction (``sampling: fixed``: exactly ⌈p·N⌉ silos; ``bernoulli``: each silo with probability p)
  or ``faults.participants`` silos are drawn from the available ones;
* ``deadline`` — a straggler slower than ``faults.deadline`` × the normal compute time (with
  ``faults.past_deadline: partial``, only one too slow to finish a single local step by then).

Stragglers (``{silo, factor, start, end, probability}``) slow a silo's compute in the simulated
clock. Past ``faults.deadline`` a straggler is left out of the round (``past_deadline: drop``) or
takes part with the local steps it finishes by the deadline (``partial``): ⌊τ · deadline /
factor⌋ of its τ = ``train.local_steps`` (the heterogeneous local work FedNova normalises; the
clock charges factor × its share of τ). Link failures (``{edge: [a, b], start, end,
directed}``) take an edge's arcs out of the round (no message; the clock and the mixing weights
follow). A silo that comes back after being absent rejoins from its last state or from the
current Θ (``faults.rejoin``).

A corrupted silo (``faults.corrupt``: ``{silo, kind, level, start, end}``) takes part as usual
but, in its window, trains on corrupted labels or sends noised weights:

* ``random_labels`` — round(level · n) of its n training labels are replaced by a uniformly drawn
  class (which may be the true one); ``label_noise`` — as many are moved to another class (never
  the true one). Which samples, and their new classes, are drawn once per silo from the run's
  seed (:func:`corrupt_labels`), so they are the same in every round of the window, on any
  placement and after ``--resume``; outside the window the silo trains on its own labels again.
  Only the training split is touched: the silo's validation split and the test set stay clean.
* ``weight_noise`` — Gaussian noise of standard deviation ``level`` on every floating-point
  weight the silo *sends*: each message along an arc (``Federation.exchange``) and each upload to
  the CFL server. Its own model stays clean. The Θ the run reads out (the all-reduce of the
  silos' own models, scored each round and saved at the end) is not a message and adds no noise:
  the noise reaches Θ only through what the others received (in CFL, the server's average). Each
  message's noise comes from its own seed stream (:func:`noisy_message`: round, the round's n-th
  send, sender, receiver), independent of the placement and of everything else the run draws.

Everything is a pure function of (config, round, silos lost to crashes): the same on every rank
and after ``--resume``; random draws come from their own seed streams.

Drills (tests, rehearsals): ``FEDSIM_FAULT="KIND:RANK:ROUND[:ATTEMPTS]"`` makes that rank, at the
start of that round, ``stall`` (hang), ``die`` (exit abruptly) or ``kill`` (SIGKILL itself, as
``kill -9`` or the OOM killer would) — in every attempt of the run, or only in the first
``ATTEMPTS`` (an attempt is one start of the process group: the first run, then each restart).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedsim.config.faults import (
    LABEL_CORRUPTIONS,
    FaultsConfig,
)
from fedsim.data import derive_seed
from fedsim.errors import ConfigError

#: why a silo is absent from a round (the ``absent`` field of its record)
ABSENCE_REASONS = ("dropout", "crashed", "not_sampled", "deadline")
_SAMPLING_STREAM = 0xFA17
_STRAGGLER_STREAM = 0x51A6
_LABEL_STREAM = 0x1AB3  # which samples of a silo are corrupted, and into what
WEIGHT_NOISE_STREAM = 0x9015  # the noise on a corrupted silo's messages


def _within(entry: Any, k: int) -> bool:
    return entry.start <= k and (entry.end is None or k <= entry.end)


@dataclass(frozen=True)
class RoundFaults:
    """What faults do to one round: who takes part, who does not and why, the arcs that are
    down, the stragglers' compute factors, the corrupted silos (silo → (kind, level)) and the
    stragglers that finish only part of their local steps (silo → steps, ``past_deadline: partial``)."""

    round: int
    present: frozenset[int]
    absent: dict[int, str]
    down: frozenset[tuple[int, int]] = frozenset()
    factors: dict[int, float] = field(default_factory=dict)
    corrupted: dict[int, tuple[str, float]] = field(default_factory=dict)
    local_steps: dict[int, int] = field(default_factory=dict)

    def compute_scale(self, steps: int) -> dict[int, float]:
        """Silo → its compute time this round over the normal one, for the simulated clock: a
        straggler's factor, times the share of the ``steps`` local steps it ran when it stopped
        at the deadline."""
        return {i: f * self.local_steps.get(i, steps) / steps for i, f in self.factors.items()}

    @property
    def weight_noise(self) -> dict[int, float]:
        """Silo → the standard deviation of the noise on what it sends this round."""
        return {i: level for i, (kind, level) in self.corrupted.items() if kind == "weight_noise"}


class FaultSchedule:
    """The simulated faults of a run, round by round (a pure function of its arguments)."""

    def __init__(self, cfg, num_silos: int, failed: dict[int, int] | None = None) -> None:
        self.f: FaultsConfig = cfg.faults
        self.seed = cfg.seed
        self.n = num_silos
        self.local_steps = cfg.train.local_steps  # τ, what a partial straggler finishes a share of
        self.failed = dict(failed or {})  # silo -> the round it was lost in (crash, excluded)

    def round(self, k: int) -> RoundFaults:
        f, n = self.f, self.n
        absent: dict[int, str] = {i: "crashed" for i, lost in sorted(self.failed.items()) if k >= lost}
        for d in f.dropout:
            if _within(d, k):
                absent.setdefault(d.silo, "dropout")
        available = [i for i in range(n) if i not in absent]
        if f.participants is not None or f.participation < 1:
            # one draw per silo of the topology, so who is drawn does not depend on who is available
            rng = random.Random(_stream_seed(self.seed, _SAMPLING_STREAM, k))
            u = [rng.random() for _ in range(n)]
            if f.participants is None and f.sampling == "bernoulli":
                chosen = {i for i in available if u[i] < f.participation}
                if not chosen and available:  # a round needs someone: the silo with the smallest draw
                    chosen = {min(available, key=lambda i: (u[i], i))}
            else:
                m = f.participants if f.participants is not None else max(1, math.ceil(f.participation * n - 1e-9))
                chosen = set(sorted(available, key=lambda i: (u[i], i))[:m])
            for i in available:
                if i not in chosen:
                    absent[i] = "not_sampled"
        factors: dict[int, float] = {}
        if f.stragglers:
            rng = random.Random(_stream_seed(self.seed, _STRAGGLER_STREAM, k))
            draws = [rng.random() for _ in f.stragglers]  # one per entry, whatever the window
            for s, u_s in zip(f.stragglers, draws):
                if _within(s, k) and u_s < s.probability and s.factor > 1:
                    factors[s.silo] = max(factors.get(s.silo, 1.0), s.factor)
        partial: dict[int, int] = {}
        if f.deadline is not None:
            for i, factor in sorted(factors.items()):
                if factor > f.deadline and i not in absent:
                    steps = steps_by_deadline(self.local_steps, f.deadline, factor)
                    if f.past_deadline == "partial" and steps > 0:
                        partial[i] = steps
                    else:
                        absent[i] = "deadline"
        down: set[tuple[int, int]] = set()
        for link in f.links:
            if _within(link, k):
                a, b = link.edge
                down.add((a, b))
                if not link.directed:
                    down.add((b, a))
        present = frozenset(i for i in range(n) if i not in absent)
        corrupted = {c.silo: (c.kind, c.level) for c in f.corrupt if _within(c, k)}
        return RoundFaults(k, present, dict(sorted(absent.items())), frozenset(down), factors,
                           dict(sorted(corrupted.items())), partial)


def steps_by_deadline(steps: int, deadline: float, factor: float) -> int:
    """The local steps of ``steps`` a silo ``factor`` times slower finishes by ``deadline`` × the
    normal compute time: ⌊steps · deadline / factor⌋ (the small slack keeps 4 · 1.5 / 1.5 at 4)."""
    return min(steps, math.floor(steps * deadline / factor + 1e-9))


def _stream_seed(seed: int, stream: int, *ids: int) -> int:
    return derive_seed(seed, stream, *ids)


def corrupt_labels(labels: torch.Tensor, kind: str, level: float, num_classes: int, seed: int,
                   silo: int) -> torch.Tensor:
    """Silo ``silo``'s training ``labels`` corrupted by ``kind`` (a new tensor): the first
    round(level · n) samples of a permutation drawn from the silo's own seed stream get a class
    drawn uniformly (``random_labels``: any class, the true one included) or the true class moved
    by a uniform shift 1..C−1 (``label_noise``: always another class). The permutation and the
    draws do not depend on ``level`` or ``kind``, so a silo's corrupted samples are the same
    whatever the window and a larger level corrupts a superset."""
    n = labels.shape[0]
    g = torch.Generator().manual_seed(_stream_seed(seed, _LABEL_STREAM, silo))
    order = torch.randperm(n, generator=g)
    uniform = torch.randint(0, num_classes, (n,), generator=g)
    shift = torch.randint(1, max(num_classes, 2), (n,), generator=g)
    chosen = order[: round(level * n)]
    out = labels.clone()
    new = uniform if kind == "random_labels" else (labels + shift) % num_classes
    out[chosen] = new[chosen].to(labels.dtype)
    return out


def noisy_message(tensors: list[torch.Tensor], std: float, seed: int, k: int, send: int, src: int,
                  dst: int) -> list[torch.Tensor]:
    """``tensors`` as a ``weight_noise`` silo sends them: N(0, std²) added to every floating-point
    tensor (new tensors; the sender's own stay as they are), integer ones unchanged. The noise of
    the ``send``-th send of round ``k`` from ``src`` to ``dst`` (−1: the CFL server) is drawn on the
    CPU from its own seed stream, in float32, so it is the same on every placement and device."""
    g = torch.Generator().manual_seed(_stream_seed(seed, WEIGHT_NOISE_STREAM, k, send, src, dst + 1))
    out = []
    for t in tensors:
        if t.is_floating_point():
            noise = torch.randn(t.shape, generator=g, dtype=torch.float32).mul_(std)
            out.append(t.detach() + noise.to(device=t.device, dtype=t.dtype))
        else:
            out.append(t)
    return out


def rejoin_from_theta(cfg, forms_foundation: bool, via_server: bool) -> bool:
    """Whether a silo that comes back loads the current Θ (``faults.rejoin``; auto: where a
    server hands out Θ and there is one)."""
    if cfg.faults.rejoin == "auto":
        return via_server and forms_foundation
    return cfg.faults.rejoin == "theta"


def check_faults(cfg, topology, forms_foundation: bool, pooled: bool, failed: dict[int, int] | None = None,
                 sends_weights: bool = True) -> None:
    """Faults against the training graph and the rounds, before any rank starts: every silo and
    edge exists, every window lies in the run, ``rejoin: theta`` has a Θ, every round keeps at
    least one silo whose accumulation status is 1, and corruptions fit the task and the algorithm
    (``sends_weights``: whether its silos send weights in this scenario)."""
    f: FaultsConfig = cfg.faults
    n, last = topology.num_silos, cfg.rounds - 1
    if pooled and (f.active or f.corrupt):
        raise ConfigError("faults: scenario cll pools every silo's data into one silo; dropouts, sampling, "
                          "stragglers, link failures and corruptions need silos (use dfl, cfl or standalone)")
    silos = f"silos 0..{n - 1}"
    for name, entries in (("dropout", f.dropout), ("stragglers", f.stragglers), ("links", f.links),
                          ("corrupt", f.corrupt)):
        for m, entry in enumerate(entries):
            key = f"faults.{name}[{m}]"
            ids = entry.edge if name == "links" else [entry.silo]
            for i in ids:
                if not 0 <= i < n:
                    raise ConfigError(f"{key}: silo {i} is not in topology {topology.name!r} ({silos})")
            if entry.start > last:
                raise ConfigError(f"{key}.start {entry.start} is outside the run (rounds 0..{last})")
            if entry.end is not None and entry.end > last:
                raise ConfigError(f"{key}.end {entry.end} is outside the run (rounds 0..{last}); "
                                  "use end: null for 'to the end of the run'")
            if name == "links":
                a, b = entry.edge
                arcs = set(topology.arcs)
                if (a, b) not in arcs and (entry.directed or (b, a) not in arcs):
                    raise ConfigError(f"{key}.edge [{a}, {b}] is not an edge of the training graph "
                                      f"{topology.name!r}")
    for m, c in enumerate(f.corrupt):
        if c.kind in LABEL_CORRUPTIONS and cfg.task != "classification":
            raise ConfigError(f"faults.corrupt[{m}].kind {c.kind} corrupts class labels, and task: {cfg.task} "
                              "trains on masks; use kind: weight_noise")
        if c.kind == "weight_noise" and not sends_weights:
            raise ConfigError(f"faults.corrupt[{m}].kind weight_noise noises the weights silo {c.silo} sends, and "
                              f"algorithm {cfg.algorithm!r} in scenario {cfg.scenario} sends none; use a label "
                              "corruption (random_labels, label_noise)")
    if f.participants is not None and f.participants > n:
        raise ConfigError(f"faults.participants {f.participants} is more than the {n} silos of topology "
                          f"{topology.name!r}")
    if f.rejoin == "theta" and not forms_foundation:
        raise ConfigError(f"faults.rejoin: theta needs a foundation model Θ, which algorithm {cfg.algorithm!r} "
                          "does not form (its silos share no weights); use rejoin: last")
    if not (f.active or failed):
        return
    status = cfg.accumulation_status or [1] * n
    schedule = FaultSchedule(cfg, n, failed)
    for k in range(cfg.rounds):
        present = schedule.round(k).present
        if not any(status[i] for i in present):
            raise ConfigError(f"faults leave no silo with accumulation status 1 in round {k} (present: "
                              f"{', '.join(map(str, sorted(present))) or 'none'}); drop fewer silos")


class FaultInjector:
    """The faults of this rank's rounds: applies the schedule to the federation before each round
    (who is present, which arcs are down, who rejoins from Θ, whose labels are corrupted and whose
    messages are noised) and runs the drills."""

    def __init__(self, faults: FaultsConfig, schedule: FaultSchedule, seed: int, rejoin_theta: bool, rank: int,
                 attempt: int = 0, spec: str | None = None) -> None:
        """``faults``: the ``faults:`` section; ``schedule``: its rounds (:class:`FaultSchedule`);
        ``seed``: the run's seed (label corruption draws); ``rejoin_theta``: a silo coming back
        loads Θ (:func:`rejoin_from_theta`); ``attempt``: which start of the process group this is
        and ``spec`` the drill (default: ``FEDSIM_FAULT``). Built by
        :func:`fedsim.trainer.build_faults`."""
        self.rank = rank
        self.attempt = attempt
        self.spec = spec if spec is not None else os.environ.get("FEDSIM_FAULT", "")
        self.seed = seed
        self.schedule = schedule
        self.rejoin_theta = rejoin_theta
        #: silos with a label corruption somewhere in the run → their own training labels
        self._own_labels: dict[int, torch.Tensor] = {}
        self._label_silos = {c.silo for c in faults.corrupt if c.kind in LABEL_CORRUPTIONS}

    def before_round(self, k: int, fed=None) -> RoundFaults:
        """Run the drill due now, then set round ``k``'s participants on ``fed``; silos coming
        back load Θ of the silos present in round k − 1 when ``faults.rejoin`` says so (a
        collective: the schedule is the same on every rank, so every rank calls it)."""
        self._drill(k)
        now = self.schedule.round(k)
        if fed is not None:
            before = self.schedule.round(k - 1).present if k > 0 else now.present
            back = sorted(now.present - before)
            if back and self.rejoin_theta:
                fed.rejoin_from_theta(back, over=before)
            fed.begin_round(now.present, now.down, k, now.weight_noise, now.local_steps)
            self._set_labels(fed, now)
        return now

    def _set_labels(self, fed, now: RoundFaults) -> None:
        """Each hosted silo with a label corruption trains on its corrupted labels in the rounds of
        its window and on its own outside them. Every batch stream (DP-SGD's Poisson one too) reads
        ``silo.data.labels`` at each step, so swapping the tensor is all it takes; validation and
        test sets are other tensors and never change."""
        for i in sorted(self._label_silos & set(fed.hosted)):
            data = fed.hosted[i].data
            own = self._own_labels.setdefault(i, data.labels)
            kind, level = now.corrupted.get(i, (None, 0.0))
            if kind in LABEL_CORRUPTIONS:
                data.labels = corrupt_labels(own, kind, level, fed.num_classes, self.seed, i)
            else:
                data.labels = own

    def final(self, rounds: int, fed) -> RoundFaults | None:
        """The last round's participants set on ``fed`` (Θ at the end is their aggregate)."""
        if rounds < 1:
            return None
        last = self.schedule.round(rounds - 1)
        fed.begin_round(last.present, last.down)
        return last

    def _drill(self, k: int) -> None:
        if not self.spec:
            return
        kind, rank, when, *attempts = self.spec.split(":")
        if int(rank) != self.rank or int(when) != k or (attempts and self.attempt >= int(attempts[0])):
            return
        if kind == "die":
            os._exit(9)
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10**6)


FAILED_FILE = "failed_silos.json"  # in the run folder: silos lost to crashes (on_crash: exclude)


def read_failed(run_dir) -> dict[int, int]:
    """Silos a run lost to crashes → the round each was lost in (empty when none)."""
    path = Path(run_dir) / FAILED_FILE
    if not path.is_file():
        return {}
    return {int(e["silo"]): int(e["round"]) for e in json.loads(path.read_text())}


def record_failed(run_dir, entries: list[dict[str, Any]]) -> None:
    """Add ``entries`` ({silo, round, reason, rank, crashes}) to the run's failed silos (kept
    across restarts and ``--resume``; written through a temporary file)."""
    path = Path(run_dir) / FAILED_FILE
    old = json.loads(path.read_text()) if path.is_file() else []
    known = {int(e["silo"]) for e in old}
    rows = old + [e for e in entries if int(e["silo"]) not in known]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sorted(rows, key=lambda e: e["silo"]), indent=2))
    os.replace(tmp, path)


def failed_entries(run_dir) -> list[dict[str, Any]]:
    """The recorded failed silos with their details (for the summary and the report)."""
    path = Path(run_dir) / FAILED_FILE
    return json.loads(path.read_text()) if path.is_file() else []
