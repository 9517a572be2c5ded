"""FedNova — normalised averaging (Wang et al., "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization", NeurIPS 2020), client–server.

When silos take different numbers of local steps τ_i (here: stragglers stopped at the deadline,
``faults.past_deadline: partial``), FedAvg's average weights each silo's update by how far it got
and drifts towards the objective of the silos that ran longest. FedNova divides each update by the
norm of its step weights a_i and rescales the mean by their effective number:

    Δ_i = θ_i − x                 (x: the model every silo started the round from)
    x ← x + τ_eff Σ_i p_i Δ_i / ‖a_i‖₁,      τ_eff = Σ_i p_i ‖a_i‖₁

over the silos present in the round, p_i = ϑ_i n_i / Σ ϑ_j n_j. Plain SGD: ‖a_i‖₁ = τ_i (then
τ_eff = Σ p_i τ_i). SGD with momentum ρ (``train.momentum``), the buffer restarting at zero each
round: a_i = [1 − ρ^{τ_i}, …, 1 − ρ] / (1 − ρ), so ‖a_i‖₁ = (τ_i − ρ(1 − ρ^{τ_i})/(1 − ρ)) / (1 − ρ).
With equal τ_i every ratio τ_eff/‖a_i‖₁ is 1 and a round is FedAvg's (each silo then sends its
model as it is: the same bits as FedAvg's; FedNova's momentum still restarts every round).

Each silo uploads x + (τ_eff/‖a_i‖₁) Δ_i in place of its model (τ_eff and every a_i are known on
every rank: the fault schedule is; the weights take one small all-reduce), so the server's mean is
FedNova's x and the upload is FedAvg's path — coded with ``compression``, clipped and noised with
``privacy.mode: client`` (the clip bounds the rescaled update, each silo's whole contribution to
the mean). The rule applies to the parameters; buffers (BatchNorm statistics) are averaged.
``train.optimizer`` must be sgd with a constant learning rate (a_i is defined for SGD steps of
one size); Adam, AdamW and the sqrt schedule are refused before any rank starts.
"""

from __future__ import annotations

from typing import Any

import torch

from fedsim.algorithms.fedavg import FedAvg
from fedsim.algorithms.fedopt import parameter_mask
from fedsim.distributed import all_reduce_sum
from fedsim.errors import ConfigError
from fedsim.federation import load_state_tensors, state_tensors


def step_weight_norm(steps: int, momentum: float) -> float:
    """‖a_i‖₁ for ``steps`` SGD steps with momentum ρ (0: plain SGD, ‖a_i‖₁ = τ_i)."""
    if momentum == 0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho ** steps) / (1 - rho)) / (1 - rho)


class FedNova(FedAvg):
    name = "fednova"
    title = "FedNova"

    @classmethod
    def check(cls, cfg) -> None:
        t = cfg.train
        if t.optimizer != "sgd":
            raise ConfigError(f"algorithm 'fednova' normalises by the weights a_i of SGD steps (with or without "
                              f"momentum), and train.optimizer is {t.optimizer}; set train.optimizer: sgd")
        if t.lr_schedule != "constant":
            raise ConfigError("algorithm 'fednova' normalises steps of one size, and train.lr_schedule is "
                              f"{t.lr_schedule}; set train.lr_schedule: constant")

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self.is_param = parameter_mask(fed.new_model())
        self._last: dict[int, dict[str, float]] = {}  # silo → its a_i and the round's τ_eff

    def round(self, k: int) -> dict[int, float]:
        fed = self.fed
        momentum = self.train.momentum
        if momentum:  # a_i assumes the momentum buffer starts the round at zero
            for silo in fed.silos.values():
                silo.optimizer.state.clear()
        if not self.exchanges:
            return self.local_training()
        start = {i: [t.detach().clone() for t in state_tensors(s.model)] for i, s in fed.silos.items()}
        losses = self.local_training()
        a = {i: step_weight_norm(fed.local_steps(i), momentum) for i in fed.silos}
        weights = fed.silo_weights()
        sums = all_reduce_sum(torch.tensor([sum(weights[i] * a[i] for i in weights), sum(weights.values())],
                                           dtype=torch.float64, device=fed.device))
        tau_eff = float(sums[0] / sums[1])
        sent = {}
        for i, s in fed.silos.items():
            r = tau_eff / a[i]
            own = state_tensors(s.model)
            # r = 1 (every silo took as many steps): the model itself, so the round is FedAvg's to the bit
            sent[i] = own if r == 1.0 else [x + r * (t.detach() - x) if p else t.detach()
                                            for x, t, p in zip(start[i], own, self.is_param)]
            self._last[i] = {"fednova_a": a[i], "fednova_tau_eff": tau_eff}
        theta = fed.download_from_server(fed.upload_to_server(k, sent))
        for silo in fed.silos.values():
            load_state_tensors(silo.model, theta)
        return losses

    def round_record(self, i: int) -> dict[str, Any]:
        return self._last.pop(i, {})
