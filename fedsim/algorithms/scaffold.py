"""SCAFFOLD — stochastic controlled averaging (Karimireddy et al., ICML 2020), client–server.

The server keeps x and a control variate c, each silo its own control variate c_i (zeros at the
start). A round of the paper's Algorithm 1 with option II:

    y_i ← x;  K_i steps  y_i ← y_i − η_l (g_i(y_i) − c_i + c)          (corrected local SGD)
    c_i⁺ = c_i − c + (x − y_i) / (K_i η_l)                              (option II)
    silo i sends (Δy_i, Δc_i) = (y_i − x, c_i⁺ − c_i);  c_i ← c_i⁺
    x ← x + η_g Σ_S p_i Δy_i,    c ← c + Σ_S w_i Δc_i / Σ_all w_j

over the silos S present in the round, w_i = ϑ_i n_i and p_i = w_i / Σ_S w_j (the paper: w = 1,
so x moves by η_g times the mean of Δy and c by |S|/N times the mean of Δc). K_i is the silo's
local steps this round (fewer for a straggler stopped at the deadline). The correction is added to
the gradient just before each optimiser step, after DP-SGD's clipping and noise under
``privacy.mode: sample`` (c and c_i are then post-processing of earlier private steps).

Local steps are plain SGD, as in the paper and FLamby's implementation: option II reads η_l as the
step size of every step, so ``train.optimizer`` must be sgd with ``train.momentum: 0`` and a
constant learning rate; anything else is refused before any rank starts. A silo sends its model
update and its variate update (twice the model's parameters) and receives x and c: both are
booked on the star through the server, and the simulated clock charges the larger messages. A
silo that sits a round out (``faults:``) keeps its c_i; every c_i is in its silo's checkpoint, x and
c in every silo's. Not available: ``privacy.mode: client`` (Δc_i is a second release of the silo's
update that DP-FedAvg's clip and noise do not cover) and ``compression`` (which codes model
messages; the variates would travel beside them uncoded).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from fedsim.algorithms.fedavg import FedAvg
from fedsim.algorithms.fedopt import ServerModel
from fedsim.distributed import all_reduce_sum
from fedsim.errors import ConfigError
from fedsim.federation import load_state_tensors, state_tensors
from fedsim.transport import message_bytes, weighted_sum


class Scaffold(FedAvg):
    name = "scaffold"
    title = "SCAFFOLD"
    privacy_modes = ("sample",)
    privacy_note = ("each silo also sends its control-variate update Δc_i, a second release of its round "
                    "that DP-FedAvg's clip and noise do not cover; use privacy.mode: sample (DP-SGD)")

    @classmethod
    def check(cls, cfg) -> None:
        t = cfg.train
        if t.optimizer != "sgd" or t.momentum != 0:
            raise ConfigError(f"algorithm 'scaffold' takes plain SGD local steps (option II estimates c_i from "
                              f"(x − y_i)/(K·η_l)), and train.optimizer is {t.optimizer} with train.momentum "
                              f"{t.momentum:g}; set train.optimizer: sgd and train.momentum: 0")
        if t.lr_schedule != "constant" or t.lr <= 0:
            raise ConfigError(f"algorithm 'scaffold' divides by the local step size η_l, which must be constant and "
                              f"positive (train.lr {t.lr:g}, train.lr_schedule {t.lr_schedule}); set train.lr > 0 "
                              "and train.lr_schedule: constant")
        if cfg.compression.active:
            raise ConfigError(f"compression.kind {cfg.compression.kind} codes model messages, and scaffold's "
                              "control variates would travel beside them uncoded; use compression.kind: none")

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self.server = ServerModel(fed)
        params = self.server.params(self.server.x)
        self.c = [torch.zeros_like(p) for p in params]  # the server's control variate
        self.c_i = {i: [torch.zeros_like(p) for p in params] for i in fed.hosted}  # each silo's
        self._correction: dict[int, list[torch.Tensor]] = {}  # silo → c − c_i while it trains
        self._total_weight: float | None = None  # Σ w_j over every silo, present or not
        for i, silo in fed.hosted.items():
            silo.optimizer.register_step_pre_hook(lambda opt, args, kwargs, i=i: self._correct(i))

    def _correct(self, i: int) -> None:
        """g ← g − c_i + c on silo i's parameters, just before its optimiser steps (after DP-SGD
        has set the private gradient, when there is one)."""
        correction = self._correction.get(i)
        if correction is None:
            return
        for p, d in zip(self.fed.hosted[i].model.parameters(), correction, strict=True):
            if p.grad is not None:
                p.grad.add_(d)

    def message_factor(self) -> float:
        """Each message carries the model and a variate the size of its parameters (up: Δy_i and
        Δc_i, down: x and c)."""
        template = self.fed.state_template()
        params = self.server.params(template)
        return 1.0 + message_bytes(params) / message_bytes(template)

    def round(self, k: int) -> dict[int, float]:
        if not self.exchanges:
            return self.local_training()
        fed, lr = self.fed, self.train.lr
        start = {i: [t.detach().clone() for t in self.server.params(state_tensors(s.model))]
                 for i, s in fed.silos.items()}
        for i in fed.silos:
            self._correction[i] = [c - ci for c, ci in zip(self.c, self.c_i[i])]
        try:
            losses = self.local_training()
        finally:
            self._correction.clear()
        variate_updates = {}
        for i, s in sorted(fed.silos.items()):
            steps_lr = fed.local_steps(i) * lr  # K_i · η_l
            y = self.server.params(state_tensors(s.model))
            new = [ci - c + (x - yi) / steps_lr for ci, c, x, yi in zip(self.c_i[i], self.c, start[i], y)]
            variate_updates[i] = [a - b for a, b in zip(new, self.c_i[i])]
            self.c_i[i] = new
        mean = fed.upload_to_server(k)  # Δy_i, booked by the federation
        delta = self.server.pseudo_update(mean)
        g = self.settings.server_lr
        x = self.server.advance(mean, [p + g * d for p, d in zip(self.server.params(self.server.x), delta)])
        self.c = self._update_server_variate(variate_updates)
        theta = fed.download_from_server(x)
        for silo in fed.silos.values():
            load_state_tensors(silo.model, theta)
        for i in fed.silos:  # the variates' traffic: Δc_i up, c down, on the star through the server
            fed.transport.book_server(i, up=message_bytes(variate_updates[i]), down=message_bytes(self.c))
        return losses

    def _update_server_variate(self, updates: dict[int, list[torch.Tensor]]) -> list[torch.Tensor]:
        """c + Σ_S w_i Δc_i / Σ_all w_j: one all-reduce of this rank's weighted Δc_i (in float64)."""
        fed = self.fed
        t0 = time.perf_counter()
        if self._total_weight is None:  # a collective, on every rank in the same (first) round
            own = sum(fed.silo_weights(over=frozenset(fed.hosted)).values())
            self._total_weight = float(all_reduce_sum(torch.tensor([own], dtype=torch.float64,
                                                                   device=fed.device)).item())
        total, _ = weighted_sum(updates, fed.silo_weights(), fed.device, template=self.c)
        fed.exchange_seconds += time.perf_counter() - t0
        out, at = [], 0
        for c in self.c:
            part = total[at:at + c.numel()].view(c.shape) / self._total_weight
            out.append(c + part.to(c.dtype))
            at += c.numel()
        return out

    def round_record(self, i: int) -> dict[str, Any]:
        if i not in self.c_i:
            return {}
        return {"control_variate_norm": float(torch.sqrt(sum((t.double() ** 2).sum() for t in self.c_i[i])))}

    def silo_state(self, i: int) -> dict[str, Any]:
        return {"c_i": self.c_i[i], "server": {"x": self.server.state(), "c": self.c}}

    def load_silo_state(self, i: int, state: dict[str, Any]) -> None:
        if "c_i" in state:
            self.c_i[i] = [t.to(self.fed.device) for t in state["c_i"]]
        if "server" in state:
            self.server.load(state["server"]["x"])
            self.c = [t.to(self.fed.device) for t in state["server"]["c"]]
