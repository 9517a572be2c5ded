"""FedOpt — adaptive federated optimisation (Reddi et al., "Adaptive Federated Optimization",
ICLR 2021), client–server.

Each round the silos take their local steps from the server's model x_t, as in FedAvg; the server
then treats the weighted mean of their updates as a pseudo-gradient and steps its own optimiser
(Algorithm 2 of the paper; no bias correction, as there):

    Δ_t = Σ_i p_i (θ_i − x_t)                            p_i = ϑ_i n_i / Σ ϑ_j n_j over present silos
    m_t = β1 m_{t−1} + (1 − β1) Δ_t
    v_t = v_{t−1} + Δ_t²                                 FedAdagrad
    v_t = v_{t−1} − (1 − β2) Δ_t² sign(v_{t−1} − Δ_t²)  FedYogi
    v_t = β2 v_{t−1} + (1 − β2) Δ_t²                     FedAdam
    x_{t+1} = x_t + η m_t / (√v_t + τ)                   m_{−1} = 0, v_{−1} = τ²

``server_optimizer: sgd`` is x_{t+1} = x_t + η Δ_t (η = 1: FedAvg). The server's rule applies to
the model's parameters; its buffers (BatchNorm statistics, counters) take the plain average, as
FedAvg's. The upload is FedAvg's (:meth:`fedsim.federation.Federation.upload_to_server`: coded
with ``compression``, clipped and noised with ``privacy.mode: client``, where the server's step is
post-processing of the noised mean and spends no extra ε); with a codec the updates are taken
against the Θ̂ the silos decoded, and the server codes the change from Θ̂ to x_{t+1} on the way
down. x, m and v are the data-less server's state: every rank computes them alike from the same
all-reduced mean, and every silo's checkpoint keeps them, so ``--resume`` continues bit-identically
on any placement.
"""

from __future__ import annotations

from typing import Any

import torch

from fedsim.algorithms.fedavg import FedAvg
from fedsim.algorithms.settings import FedOptConfig
from fedsim.federation import load_state_tensors


def parameter_mask(model: torch.nn.Module) -> list[bool]:
    """For each tensor of the model's state (``state_tensors`` order): is it a parameter (True) or a
    buffer? Server rules act on parameters; buffers are averaged."""
    return [isinstance(t, torch.nn.Parameter) for t in model.state_dict(keep_vars=True).values()]


def server_step(cfg: FedOptConfig, x: list[torch.Tensor], delta: list[torch.Tensor],
                m: list[torch.Tensor], v: list[torch.Tensor]) -> list[torch.Tensor]:
    """x_{t+1} of Algorithm 2 for parameters ``x`` and pseudo-update ``delta`` (m and v updated in
    place; unused by sgd)."""
    if cfg.server_optimizer == "sgd":
        return [p + cfg.server_lr * d for p, d in zip(x, delta)]
    out = []
    for p, d, m_, v_ in zip(x, delta, m, v):
        m_.mul_(cfg.beta1).add_(d, alpha=1 - cfg.beta1)
        d2 = d * d
        if cfg.server_optimizer == "adagrad":
            v_.add_(d2)
        elif cfg.server_optimizer == "yogi":
            v_.sub_((1 - cfg.beta2) * d2 * torch.sign(v_ - d2))
        else:
            v_.mul_(cfg.beta2).add_(d2, alpha=1 - cfg.beta2)
        out.append(p + cfg.server_lr * m_ / (v_.sqrt() + cfg.tau))
    return out


class ServerModel:
    """The data-less server's model x_t, kept alike on every rank (it starts as the run's common
    initial model, which every silo starts from), and the step from the silos' mean to x_{t+1}."""

    def __init__(self, fed) -> None:
        self.fed = fed
        model = fed.new_model()
        self.x = [t.detach().clone() for t in model.state_dict().values()]
        self.is_param = parameter_mask(model)

    def params(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t for t, p in zip(tensors, self.is_param) if p]

    def pseudo_update(self, mean: list[torch.Tensor]) -> list[torch.Tensor]:
        """Δ_t over the parameters: the mean the server received minus the model the silos started
        from — Θ̂ as they decoded it when the server path is coded, else x_t itself."""
        base = self.fed.server_reference if self.fed.server_reference is not None else self.x
        return [a - b for a, b in zip(self.params(mean), self.params(base))]

    def advance(self, mean: list[torch.Tensor], new_params: list[torch.Tensor]) -> list[torch.Tensor]:
        """x_{t+1}: ``new_params`` for the parameters, the mean itself for the buffers."""
        it = iter(new_params)
        self.x = [next(it) if p else a.clone() for a, p in zip(mean, self.is_param)]
        return self.x

    def state(self) -> list[torch.Tensor]:
        return self.x

    def load(self, x: list[torch.Tensor]) -> None:
        self.x = [t.to(self.fed.device) for t in x]


class FedOpt(FedAvg):
    name = "fedopt"
    title = "FedOpt"

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self.opt: FedOptConfig = self.settings
        self.server = ServerModel(fed)
        # m_{−1} = 0 and v_{−1} = τ² (Algorithm 2's initialisation, its weakest admissible v)
        params = self.server.params(self.server.x)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.full_like(p, self.opt.tau ** 2) for p in params]

    def round(self, k: int) -> dict[int, float]:
        losses = self.local_training()
        if not self.exchanges:
            return losses
        mean = self.fed.upload_to_server(k)
        delta = self.server.pseudo_update(mean)
        x = self.server.advance(mean, server_step(self.opt, self.server.params(self.server.x), delta, self.m, self.v))
        theta = self.fed.download_from_server(x)
        for silo in self.fed.silos.values():
            load_state_tensors(silo.model, theta)
        return losses

    def silo_state(self, i: int) -> dict[str, Any]:
        # the server's state, the same on every rank, in every silo's file (one copy per file:
        # the same tensors), so a resume on any placement finds it
        return {"server": {"x": self.server.state(), "m": self.m, "v": self.v}}

    def load_silo_state(self, i: int, state: dict[str, Any]) -> None:
        if "server" in state:
            s = state["server"]
            self.server.load(s["x"])
            self.m = [t.to(self.fed.device) for t in s["m"]]
            self.v = [t.to(self.fed.device) for t in s["v"]]
