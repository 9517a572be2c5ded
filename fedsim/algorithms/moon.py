"""MOON — model-contrastive federated learning (Li, He & Song, CVPR 2021).

FedAvg whose local objective adds a contrastive term pulling the local representation z of a
sample towards the global model's z_glob and away from the silo's previous-round local model's
z_prev:  ℓ = CE + μ · −log( e^{cos(z, z_glob)/τ} / (e^{cos(z, z_glob)/τ} + e^{cos(z, z_prev)/τ}) ).
z is the model's feature map average-pooled to one vector (MOON adds a projection head; we keep
one model definition for every algorithm so their foundations are comparable). In round 0 the
previous model is the global model, as in the authors' code. Each silo's previous model is part
of its checkpoint, so ``--resume`` continues exactly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fedsim.algorithms.fedavg import FedAvg
from fedsim.federation import load_state_tensors, state_tensors
from fedsim.models import features_of, logits_and_features, representation


def contrastive_loss(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, temperature: float) -> torch.Tensor:
    """MOON's model-contrastive loss, averaged over the batch: the global model's
    representation is the positive, the previous local model's the negative."""
    logits = torch.stack([F.cosine_similarity(z, z_glob, dim=1), F.cosine_similarity(z, z_prev, dim=1)], dim=1)
    target = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    return F.cross_entropy(logits / temperature, target)


class MOON(FedAvg):
    name = "moon"
    title = "MOON"
    tasks = ("classification",)  # its extra loss term is written for class logits
    needs_features = True  # z is the pooled feature map

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self._previous: dict[int, list[torch.Tensor]] = {}  # silo -> its last local model
        self._frozen: dict[str, torch.nn.Module] = {}  # two reusable models, eval mode

    def _frozen_model(self, role: str, state: list[torch.Tensor]) -> torch.nn.Module:
        if role not in self._frozen:
            self._frozen[role] = self.fed.new_model().eval().requires_grad_(False)
        model = self._frozen[role]
        load_state_tensors(model, state)
        return model

    def local_loss(self, i, silo):
        # the two frozen models are shared by the silos: loaded just before silo i trains
        start = state_tensors(silo.model)
        glob = self._frozen_model("global", start)
        prev = self._frozen_model("previous", self._previous.get(i, start))
        mu, tau = self.settings.mu, self.settings.temperature

        def loss_fn(model, x, y):
            logits, feats = logits_and_features(model, x)
            with torch.no_grad():
                z_glob = representation(features_of(glob, x))
                z_prev = representation(features_of(prev, x))
            return F.cross_entropy(logits, y) + mu * contrastive_loss(representation(feats), z_glob, z_prev, tau)

        return loss_fn

    def local_training(self, steps: int | None = None) -> dict[int, float]:
        losses = super().local_training(steps)
        for i, s in self.fed.silos.items():  # before aggregation: each silo's own local model
            self._previous[i] = [t.detach().clone() for t in state_tensors(s.model)]
        return losses

    def silo_state(self, i: int) -> dict[str, Any]:
        return {"previous": self._previous[i]} if i in self._previous else {}

    def load_silo_state(self, i: int, state: dict[str, Any]) -> None:
        if "previous" in state:
            self._previous[i] = [t.to(self.fed.device) for t in state["previous"]]
