"""An algorithm plug-in: ``algorithm: "my_algorithm:ServerMomentum"`` — FedAvg with server
momentum (FedAvgM; Hsu, Qi & Brown 2019).

fedsim imports the class on every rank (from the working directory or PYTHONPATH), checks that it
subclasses ``fedsim.algorithms.base.Algorithm`` and fills its ``Settings`` dataclass from the
config's ``algorithm_args:`` (types and ranges checked like any config key). A round:

  1. every silo present trains ``train.local_steps`` steps on its own data;
  2. the server forms Θ̄ from the silos' uploads (the mean, or the ``aggregation:`` rule);
  3. v ← β v + (Θ − Θ̄);  Θ ← Θ − η v   (momentum on the averaged update of the parameters;
     buffers such as BatchNorm's statistics take Θ̄);
  4. every silo present starts the next round from Θ.
With β = 0 and η = 1 it is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch

from fedsim.algorithms.base import Algorithm
from fedsim.federation import load_state_tensors
from fedsim.settings import Range


@dataclass
class ServerMomentumSettings:
    """FedAvg with server momentum (FedAvgM)."""

    server_lr: Annotated[float, Range(gt=0)] = 1.0  # η, the server's step along its momentum
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # β, the server's momentum


class ServerMomentum(Algorithm):
    name = "server_momentum"
    title = "FedAvgM"
    natural_scenario = "cfl"
    scenarios = ("cfl",)
    Settings = ServerMomentumSettings

    def __init__(self, fed) -> None:
        super().__init__(fed)
        # the server's state, the same on every rank: Θ (every silo starts from the same model) and v
        self.theta = [t.detach().clone() for t in fed.state_template()]
        self.velocity = [torch.zeros_like(t) for t in self.theta]
        # momentum moves the parameters; buffers (BatchNorm's statistics) take the average, as a
        # variance pushed past the average could turn negative
        model = next(iter(fed.hosted.values())).model
        params = {name for name, _ in model.named_parameters()}
        self.moves = [name in params for name in model.state_dict()]

    def round(self, k: int) -> dict[int, float]:
        losses = self.local_training()
        average = self.fed.upload_to_server(k)  # Θ̄ over the silos present in the round
        s = self.settings
        for theta, v, avg, moves in zip(self.theta, self.velocity, average, self.moves):
            if moves:
                v.mul_(s.momentum).add_(theta - avg)
                theta.sub_(s.server_lr * v)
            else:
                theta.copy_(avg)
        received = self.fed.download_from_server(self.theta)
        for silo in self.fed.silos.values():
            load_state_tensors(silo.model, received)
        return losses

    # the server's state rides in every silo's checkpoint, so --resume continues it
    def silo_state(self, i: int) -> dict[str, Any]:
        return {"theta": self.theta, "velocity": self.velocity}

    def load_silo_state(self, i: int, state: dict[str, Any]) -> None:
        self.theta = [t.to(self.fed.device) for t in state["theta"]]
        self.velocity = [t.to(self.fed.device) for t in state["velocity"]]
