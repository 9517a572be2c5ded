"""FedProx (Li et al., MLSys 2020): FedAvg whose local objective adds a proximal term,
CE(w; ξ_i) + μ/2 ‖w − w_t‖², w_t the global model the silo received at the start of the round.
Aggregation and traffic are FedAvg's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.algorithms.fedavg import FedAvg


def proximal_term(model: torch.nn.Module, anchor: list[torch.Tensor]) -> torch.Tensor:
    """Σ ‖w − w_t‖² over the trainable parameters (anchor: detached copies, same order)."""
    return sum(((w - w0) ** 2).sum() for w, w0 in zip(model.parameters(), anchor, strict=True))


class FedProx(FedAvg):
    name = "fedprox"
    title = "FedProx"
    tasks = ("classification",)  # its extra loss term is written for class logits
    privacy_modes = ("client",)
    privacy_note = ("its proximal term μ/2 ‖w − w_t‖² is not a per-sample loss, so DP-SGD's per-sample "
                    "gradients would silently drop it; use privacy.mode: client, or fedavg / moon")

    def local_loss(self, i, silo):
        anchor = [p.detach().clone() for p in silo.model.parameters()]  # w_t, before the steps
        mu = self.settings.mu
        return lambda model, x, y: F.cross_entropy(model(x), y) + 0.5 * mu * proximal_term(model, anchor)
