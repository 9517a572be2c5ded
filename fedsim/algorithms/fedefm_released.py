"""The FedEFM authors' released rule (aioz-ai/FedEFM, ``communication.py``,
``Peer2PeerNetwork.mix``), a baseline for what distillation and the EMD add on top of it.

A round, for every silo i:
  1. local training: ``train.local_steps`` steps on ξ_i;
  2. each in-neighbour j sends θ_j to i, and i trains that copy on its own data for
     ``fedefm_released.overseas_steps`` steps (the code: one step), giving θ̂_{j→i};
  3. θ_i ← s·θ_i + (1 − s)·Σ_j w_ij θ̂_{j→i} with s = ½ and w_ij = 1/|N(i)| (the code's ring
     edge weights, ½ each: θ_i ← ½ θ_i + ¼ θ̂_pred + ¼ θ̂_succ).
No distillation, no EMD, no return trip. Where the code deep-copies the neighbour's Adam state
with its model, we start each copy with a fresh optimiser (the paper sends only weights; sending
the moments would triple every message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from fedsim.algorithms.base import Algorithm
from fedsim.algorithms.gossip import mix
from fedsim.federation import load_state_tensors, make_optimizer, state_tensors
from fedsim.settings import Range


@dataclass
class FedEFMReleasedConfig:
    """The FedEFM authors' released rule (aioz-ai/FedEFM ``communication.py``): local steps, then
    each silo trains a copy of every in-neighbour's model on its own data and keeps
    ½ own + ½ the mean of those copies. No distillation, no EMD."""

    overseas_steps: Annotated[int, Range(ge=1)] = 1  # steps a neighbour's copy trains on the host's data (the code: 1)
    self_weight: Annotated[float, Range(ge=0, le=1)] = 0.5  # the silo's own share (the code: ½)


class FedEFMReleased(Algorithm):
    name = "fedefm_released"
    title = "FedEFM released code"

    @classmethod
    def private_steps(cls, cfg, scenario, graph, silo: int, k: int) -> int:
        # its local steps, then one stretch per in-neighbour's copy trained on ξ_silo
        if not scenario.exchanges:
            return cfg.train.local_steps
        return cfg.train.local_steps + cfg.fedefm_released.overseas_steps * graph.in_degree(silo)

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self._visitor: nn.Module | None = None

    def round(self, k: int) -> dict[int, float]:
        losses = self.local_training()
        if not self.exchanges:
            return losses
        fed, silos, rel = self.fed, self.fed.silos, self.cfg.fedefm_released
        got = fed.exchange(fed.active_arcs(k), lambda j, i: state_tensors(silos[j].model))
        trained: dict[int, dict[int, list[torch.Tensor]]] = {i: {} for i in silos}
        for (j, i), tensors in sorted(got.items(), key=lambda kv: (kv[0][1], kv[0][0])):  # host i, visitors by id
            if self._visitor is None:
                self._visitor = fed.new_model()
            load_state_tensors(self._visitor, tensors)
            fed.train(self._visitor, make_optimizer(self._visitor, self.cfg), i, rel.overseas_steps)
            fed.charge(i, rel.overseas_steps)
            trained[i][j] = [t.clone() for t in state_tensors(self._visitor)]
        s = rel.self_weight
        for i, silo in silos.items():
            if trained[i]:
                weights = {i: s, **{j: (1.0 - s) / len(trained[i]) for j in trained[i]}}
                load_state_tensors(silo.model, mix(state_tensors(silo.model), weights, i, trained[i]))
        return losses
