"""Client-level DP in the DP-FedAvg style (McMahan et al., ICLR 2018), for the algorithms whose
server averages weights (FedAvg, FedProx, MOON):

    Δ_i  = θ_i − Θ̂                      silo i's update over the round (what it uploads)
    Δ̄_i = Δ_i · min(1, S / ‖Δ_i‖₂)      clipped to S = privacy.max_grad_norm
    Θ    = Θ̂ + (Σ_i ϑ_i Δ̄_i + N(0, σ² S² I)) / m,     m = Σ_i ϑ_i (the participating silos)

Adding or removing one silo's data changes the noisy sum by at most S, so each round is a
Gaussian mechanism with noise multiplier σ; Opacus' RDP accountant composes the rounds at sampling
rate 1. With ``faults:`` the sum runs over the silos present in the round: m is counted per
round (the noise std σ S / m follows it, so the noisy sum keeps σ S), and a silo's ε composes only
the rounds its update went into. A round in which nobody takes part adds no noise and costs
nothing. Partial participation is not treated as privacy amplification by sampling (the draws are
seeded, not secret): the accounting stays at rate 1, an upper bound. The uniform weights are part of the
guarantee (``weight_by_samples`` is refused). The server's noise is drawn from a generator seeded
by (seed, round), identically on every rank — the one draw a trusted server would make, with no
extra message and the same result on any placement. With compression the clip applies to the
update as the server decodes it, so the bound holds for what is actually summed.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from opacus.accountants import RDPAccountant

from fedsim.data import derive_seed
from fedsim.privacy.base import NoPrivacy
from fedsim.privacy.plan import PrivacyPlan

NOISE_STREAM = 0xC11E  # the seed stream of the server's noise (fedsim.data.derive_seed)


def update_norm(update: list[torch.Tensor]) -> float:
    """‖Δ‖₂ over the floating tensors, in float64 (integer buffers are not part of an update)."""
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in update if t.is_floating_point())))


class ClientDP(NoPrivacy):
    """DP-FedAvg on this rank's side of the server (module docstring)."""

    mode = "client"

    def __init__(self, plan: PrivacyPlan, fed) -> None:
        self.plan = plan
        self.seed = fed.cfg.seed
        #: silo -> noisy averages its clipped update went into (the same on every rank)
        self.rounds_in: dict[int, int] = {}
        self._eps: dict[int, float] = {}  # rounds -> ε (Opacus' accountant), cached
        self.norms: dict[int, tuple[float, float]] = {}  # silo -> (‖Δ_i‖, ‖Δ̄_i‖) of this round

    def clip(self, silo: int, update: list[torch.Tensor]) -> list[torch.Tensor]:
        """Δ̄_i: the update scaled into the ball of radius S (norms kept for the metrics)."""
        norm = update_norm(update)
        bound = self.plan.max_grad_norm
        # a hair inside the ball: scaling float32 tensors rounds each entry (relative error ≲ 6e-8),
        # and the bound must hold for the tensors actually summed, not only in exact arithmetic
        factor = bound / (norm * (1 + 1e-6)) if norm > bound else 1.0
        clipped = [t * factor if t.is_floating_point() else t for t in update]
        self.norms[silo] = (norm, update_norm(clipped))
        return clipped

    def participants(self, present) -> list[int]:
        """The silos whose clipped update is in this round's sum: present, with ϑ_i = 1."""
        return sorted(i for i in present if self.plan.sample_rates.get(i))

    def noise(self, mean: list[torch.Tensor], k: int, present) -> list[torch.Tensor]:
        """The average of the clipped updates of the m silos in ``participants(present)`` plus
        N(0, (σ S / m)²) on every floating entry, drawn from (seed, round k); books the round on
        those silos' accounts."""
        plan = self.plan
        taking_part = self.participants(present)
        if not taking_part:  # nobody's data went into this round
            return mean
        std = plan.noise_multiplier * plan.max_grad_norm / len(taking_part)
        g = torch.Generator().manual_seed(derive_seed(self.seed, NOISE_STREAM, k))
        out = []
        for t in mean:
            if t.is_floating_point() and std > 0:
                t = t + torch.normal(0.0, std, size=t.shape, generator=g, dtype=torch.float64).to(t.device, t.dtype)
            out.append(t)
        for i in taking_part:
            self.rounds_in[i] = self.rounds_in.get(i, 0) + 1
        return out

    def epsilon(self, silo: int) -> float:
        """ε spent on silo ``silo``'s data: Opacus' RDP accountant over the rounds it took part in
        (0 for a silo that never did)."""
        rounds = self.rounds_in.get(silo, 0)
        if rounds == 0:
            return 0.0
        if rounds not in self._eps:
            accountant = RDPAccountant()
            accountant.history = [(self.plan.noise_multiplier, 1.0, rounds)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "optimal order is the largest alpha"
                self._eps[rounds] = float(accountant.get_epsilon(delta=self.plan.delta))
        return self._eps[rounds]

    def record(self, silo: int) -> dict[str, Any]:
        rec: dict[str, Any] = {"epsilon": self.epsilon(silo)}
        if silo in self.norms:
            rec["update_norm"], rec["clipped_update_norm"] = self.norms.pop(silo)
        return rec

    def silo_state(self, silo: int) -> dict[str, Any]:
        # every rank counts every silo's rounds; each silo's checkpoint keeps all of them, so a
        # resume on another placement finds every count
        return {"rounds_in": dict(self.rounds_in)}

    def load_silo_state(self, silo: int, state: dict[str, Any]) -> None:
        if "rounds_in" in state:
            self.rounds_in = {int(i): int(n) for i, n in state["rounds_in"].items()}
