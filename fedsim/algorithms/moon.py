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
from fedsim.models import logits_and_features, representation
from fedsim.runtime import load_state_tensors, state_tensors, train_steps


def contrastive_loss(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, temperature: float) -> torch.Tensor:
    """MOON's model-contrastive loss, averaged over the batch: the global model's
    representation is the positive, the previous local model's the negative."""
    logits = torch.stack([F.cosine_similarity(z, z_glob, dim=1), F.cosine_similarity(z, z_prev, dim=1)], dim=1)
    target = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    return F.cross_entropy(logits / temperature, target)


class MOON(FedAvg):
    name = "moon"
    tasks = ("classification",)  # its extra loss term is written for class logits

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

    def local_training(self, steps: int | None = None) -> dict[int, float]:
        steps = self.cfg.train.local_steps if steps is None else steps
        mu, tau = self.cfg.moon.mu, self.cfg.moon.temperature
        losses = {}
        for i, s in sorted(self.fed.silos.items()):
            start = state_tensors(s.model)
            glob = self._frozen_model("global", start)
            prev = self._frozen_model("previous", self._previous.get(i, start))

            def loss_fn(model, x, y, glob=glob, prev=prev):
                logits, feats = logits_and_features(model, x)
                with torch.no_grad():
                    z_glob = representation(glob.features(x))
                    z_prev = representation(prev.features(x))
                con = contrastive_loss(representation(feats), z_glob, z_prev, tau)
                return F.cross_entropy(logits, y) + mu * con

            losses[i] = train_steps(s.model, s.optimizer, s.batches, steps, loss_fn)
            self._previous[i] = [t.detach().clone() for t in state_tensors(s.model)]
        return losses

    def silo_state(self, i: int) -> dict[str, Any]:
        return {"previous": self._previous[i]} if i in self._previous else {}

    def load_silo_state(self, i: int, state: dict[str, Any]) -> None:
        if "previous" in state:
            self._previous[i] = [t.to(self.fed.device) for t in state["previous"]]
