"""The FedEFM authors' released rule (aioz-ai/FedEFM, ``communication.py``,
``Peer2PeerNetwork.mix``), a baseline for what distillation and the EMD add on top of it.

A round, for every silo i:
  1. local training: ``train.local_steps`` steps on ξ_i;
  2. each in-neighbour j sends θ_j to i, and i trains that copy on its own data for
     ``fedefm_released.overseas_steps`` steps (the code: one step), giving θ̂_{j→i};
  3. θ_i ← s·θ_i + (1 − s)·Σ_j w_ij θ̂_{j→i} with s = ½ and w_ij = 1/|N(i)| (the code's ring
     edge weights, ½ each: θ_i ← ½ θ_i + ¼ θ̂_pred + ¼ θ̂_succ).
No distillation, no EMD, no return trip.

The code deep-copies the neighbour's whole model object (``copy.deepcopy(self.workers_models[
neighbor])``), so the copy trains with the neighbour's AdamW moments, step count and LR-schedule
position. ``fedefm_released.expert_optimizer: travels`` does the same: θ_j's optimiser state rides
in θ_j's message (counted in its bytes and in the simulated clock, about twice a model's size
more under Adam), and after the copy's steps at i that state is dropped with the copy — the mix
loads weights only, so silo i keeps its own optimiser, and j's is untouched, as in the code.
``fresh`` (the default) starts each copy with a new optimiser instead (the paper sends weights).
"""

from __future__ import annotations

import torch
from torch import nn

from fedsim.algorithms.base import Algorithm
from fedsim.algorithms.gossip import mix
from fedsim.federation import load_state_tensors, state_tensors
from fedsim.optim import (
    load_travelling_state,
    make_optimizer,
    reset_optimizer,
    travelling_factor,
    travelling_state,
    travelling_template,
)


class FedEFMReleased(Algorithm):
    name = "fedefm_released"
    title = "FedEFM released code"

    @classmethod
    def private_steps(cls, cfg, scenario, graph, silo: int, k: int) -> int:
        # its local steps, then one stretch per in-neighbour's copy trained on ξ_silo
        if not scenario.exchanges:
            return cfg.train.local_steps
        return cfg.train.local_steps + cfg.fedefm_released.overseas_steps * graph.in_degree(silo)

    @classmethod
    def mix_inputs(cls, cfg, scenario, graph, silo: int) -> int | None:
        return 1 + graph.in_degree(silo) if scenario.exchanges else None

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self._visitor: nn.Module | None = None  # one model and optimiser for every copy, reset or loaded per visit
        self._visitor_optimizer: torch.optim.Optimizer | None = None
        #: expert_optimizer travels: the optimiser state that rides with each model sent (its shapes)
        self._rider = travelling_template(next(iter(fed.hosted.values())).optimizer) \
            if self.settings.expert_optimizer == "travels" else None

    def message_factor(self) -> float:
        if self._rider is None:
            return 1.0
        silo = next(iter(self.fed.hosted.values()))
        return travelling_factor(silo.model, silo.optimizer)

    def round(self, k: int) -> dict[int, float]:
        losses = self.local_training()
        if not self.exchanges:
            return losses
        fed, silos, rel = self.fed, self.fed.silos, self.settings
        rider = (lambda j, i: travelling_state(silos[j].optimizer)) if self._rider is not None else None
        got = fed.exchange(fed.active_arcs(k), lambda j, i: state_tensors(silos[j].model),
                           rider=rider, rider_template=self._rider)
        n_model = len(fed.state_template())
        trained: dict[int, dict[int, list[torch.Tensor]]] = {i: {} for i in silos}
        for (j, i), tensors in sorted(got.items(), key=lambda kv: (kv[0][1], kv[0][0])):  # host i, visitors by id
            if self._visitor is None:
                self._visitor = fed.new_model()
                self._visitor_optimizer = make_optimizer(self._visitor, self.cfg)
            load_state_tensors(self._visitor, tensors[:n_model])
            optimizer = self._visitor_optimizer
            if rider is not None:  # the neighbour's moments, step count and LR position (a deep copy)
                load_travelling_state(optimizer, tensors[n_model:])
            else:  # a fresh optimiser
                reset_optimizer(optimizer, self.cfg)
            fed.train(self._visitor, optimizer, i, rel.overseas_steps)
            fed.charge(i, rel.overseas_steps)
            trained[i][j] = [t.clone() for t in state_tensors(self._visitor)]
        s = rel.self_weight
        for i, silo in silos.items():
            if trained[i]:
                weights = {i: s, **{j: (1.0 - s) / len(trained[i]) for j in trained[i]}}
                load_state_tensors(silo.model, mix(state_tensors(silo.model), weights, i, trained[i], fed.aggregation))
        return losses
