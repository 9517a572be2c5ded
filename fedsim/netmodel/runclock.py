"""The simulated network clock of a training run, one component of the round loop (MultigraphFL's delay model).

Each silo keeps a simulated time; after every round the delay model advances it on the graph
the scenario charges (:meth:`fedsim.plan.Scenario.clock_graph`): DFL the graph trained on (a round
trip when the algorithm's exchange is one), CFL the star through the data-less server (up, then
down), standalone and CLL only compute."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from fedsim.config.models import ModelConfig
from fedsim.config.net import NetConfig
from fedsim.data import NUM_CLASSES
from fedsim.distributed import all_reduce_max
from fedsim.models import build_model
from fedsim.netmodel import DelayModel, SimClock
from fedsim.topology import Topology


def model_bits(model: torch.nn.Module) -> float:
    return float(sum(t.numel() * t.element_size() * 8 for t in model.state_dict().values()))


def config_model_bits(cfg) -> float:
    """Bits of one copy of ``cfg.model``, counted as the trainer counts them (for delay models
    built before a run)."""
    return section_model_bits(cfg.model)


def section_model_bits(model: ModelConfig) -> float:
    """Bits of one copy of the ``model:`` section's network (of heterogeneous models: the
    largest, so every rank's clock charges the same)."""
    names = dict.fromkeys(model.per_silo or [model.name])
    return max(model_bits(build_model(replace(model, name=n, per_silo=[]), NUM_CLASSES)) for n in names)


class RunClock:
    """Per-silo simulated time. The compute time per round is ``net.compute_ms`` or, measured,
    the first round's wall time per silo on the slowest rank (so every rank's clock agrees)."""

    def __init__(self, net: NetConfig, model: ModelConfig, graph: Topology | None, num_silos: int, via_server: bool,
                 local_steps: int, fed, algo, state: dict[str, Any] | None = None) -> None:
        """``net``: the ``net:`` section; ``model``: the ``model:`` section (heterogeneous models'
        message size); ``graph``: the graph the clock charges (``Scenario.clock_graph``; None:
        compute only), ``via_server`` whether it is CFL's star through the server; ``num_silos``:
        the silos of the training graph; ``local_steps``: τ (``train.local_steps``, a cut
        straggler's share); ``fed`` and ``algo``: the rank's federation and algorithm; ``state``: a
        checkpoint's (:meth:`state`). Built by :func:`fedsim.trainer.build_clock`."""
        self.net, self.model, self.graph, self.via_server = net, model, graph, via_server
        self.local_steps = local_steps
        self.fed, self.algo = fed, algo
        self.n = num_silos
        self.compute_ms: float | None = None
        self.times = [0.0] * self.n
        self.clock = None
        if state is not None:
            self._start(state["compute_ms"], state["sim_times"])

    def _start(self, compute_ms: float, times: list[float] | None) -> None:
        net, fed, algo = self.net, self.fed, self.algo
        bits = net.model_bits or algo.message_bits() or (
            section_model_bits(self.model) if self.model.heterogeneous
            else model_bits(next(iter(fed.hosted.values())).model))
        if fed.codec is not None:  # M is what travels: a coded message (net.model_bits scaled alike)
            bits *= fed.wire_ratio()
        self.compute_ms = compute_ms
        # a model travelling with its optimiser state weighs more than one copy (expert_optimizer)
        delay = DelayModel(model_bits=bits * algo.message_factor(), compute_ms=compute_ms,
                           access_gbps=net.access_gbps)
        request = None
        if algo.request_factor() != algo.message_factor():
            request = DelayModel(model_bits=bits * algo.request_factor(), compute_ms=compute_ms,
                                 access_gbps=net.access_gbps)
        if self.graph is not None:
            round_trip = algo.round_trip and not self.via_server
            self.clock = SimClock(self.graph, delay, round_trip=round_trip, request_model=request)
        if times is not None:
            self.times = list(times)
            if self.clock is not None:
                self.clock.times[: self.n] = times
                if self.via_server:
                    self.clock.times[self.n] = max(times)

    def _measured_compute_ms(self, round_seconds: float) -> float:
        if self.net.compute_ms is not None:
            return self.net.compute_ms
        value = torch.tensor([round_seconds * 1e3 / max(len(self.fed.silos), 1)], dtype=torch.float64,
                             device=self.fed.device)
        return float(all_reduce_max(value).item())

    def step(self, k: int, round_seconds: float, faults=None) -> list[float]:
        """Advance every silo's time past round ``k``; returns them (ms). ``faults``
        (:class:`fedsim.faults.RoundFaults`): absent silos' time stays, stragglers compute
        ``factor`` times slower (for the share of their local steps they ran, when the deadline
        cut them), arcs that are down carry nothing (``fed.active_arcs``)."""
        if self.compute_ms is None:
            self._start(self._measured_compute_ms(round_seconds), None)
        active = self.fed.active_arcs(k) if self.algo.exchanges_in(k) else []
        idle = [i for i in range(self.n) if faults is not None and i not in faults.present]
        scale = faults.compute_scale(self.local_steps) if faults is not None else None
        if self.clock is None:
            self.times = [t if i in idle else t + self.compute_ms * (scale or {}).get(i, 1.0)
                          for i, t in enumerate(self.times)]
        elif active == []:  # local work only: everyone just computes
            self.clock.step(active_arcs=[], compute_scale=scale, idle=idle)
            self.times = self.clock.times[: self.n].tolist()
        elif self.via_server:
            server = self.n
            if idle:  # the star's arcs of the silos taking part, both ways
                up = [(i, server) for i in range(self.n) if i not in idle]
                both = up + [(server, i) for i, _ in up]
            else:
                both = None
            self.clock.step(active_arcs=both, compute_scale=scale, idle=idle)  # upload to the server
            self.clock.step(active_arcs=both, idle=idle)  # download of the aggregate
            self.times = self.clock.times[: self.n].tolist()
        else:
            self.times = self.clock.step(active_arcs=active, compute_scale=scale, idle=idle)[: self.n].tolist()
        return self.times

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps so a resumed run's clock continues exactly."""
        return {"compute_ms": self.compute_ms, "sim_times": self.times}
