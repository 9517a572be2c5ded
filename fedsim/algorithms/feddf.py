"""FedDF — ensemble distillation for robust model fusion (Lin, Kong, Stich & Jaggi, NeurIPS 2020).

A round: every silo trains locally (as FedAvg); the server forms Θ = Σ ϑ_i n_i θ_i / Σ ϑ_i n_i
(FedAvg's average), then distils the silos' ensemble into Θ on an unlabeled public set:
for ``feddf.distill_steps`` steps, on public batch x_s,

    Θ ← Adam step on  T² · KL( softmax(z̄_s / T) ‖ softmax(f_Θ(x_s) / T) ),
    z̄_s = Σ ϑ_i n_i f_{θ_i}(x_s) / Σ ϑ_i n_i   (the ensemble's average logits, FedDF's AvgLogits)

with a fresh Adam (lr ``feddf.lr``) each round; every silo then loads the distilled Θ.

Communication: each rank computes its own silos' logits (eval mode, no gradient) on the same
public batches and one ``all_reduce`` of those small logit tensors forms z̄ (no model is sent for
it). The server's distillation runs once, where the federation hosts the server
(``Federation.on_server``), and every silo receives the same Θ whatever the placement. Bytes are booked on the star through the server: each silo
uploads its model and its logits and downloads Θ.

Not done (the paper's choices we leave out): early stopping of the distillation on a validation
set, and the public set is the synthetic generator's own stream (``fedsim.data.load_public``),
never its labels. The helpers it uses (public batches, logit averaging, softened KL)
are shared with FedMD.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsim.algorithms.fedavg import FedAvg
from fedsim.algorithms.public import average_logits, public_set, silo_logits
from fedsim.federation import Federation, load_state_tensors, state_tensors
from fedsim.losses import softened_kl
from fedsim.optim import Adam
from fedsim.transport import message_bytes


class FedDF(FedAvg):
    name = "feddf"
    title = "FedDF"
    tasks = ("classification",)  # its extra loss term is written for class logits
    privacy_modes = ("sample",)
    privacy_note = ("its server also distils the silos' own models (their logits), beyond the clipped, "
                    "noised average DP-FedAvg protects; use privacy.mode: sample")

    def __init__(self, fed: Federation) -> None:
        super().__init__(fed)
        self.public = public_set(self, self.settings.public_samples) if self.exchanges else None
        self._student: nn.Module | None = None  # the server's model (where the server is hosted)
        self.distill_loss = 0.0  # last round's mean distillation loss (where the server is hosted)

    def round(self, k: int) -> dict[int, float]:
        losses = self.local_training()
        if not self.exchanges:
            return losses
        fed, cfg = self.fed, self.settings
        theta = fed.upload_to_server(k)
        if cfg.distill_steps > 0:
            xs = self.public.batches(k, cfg.distill_steps)
            logits = {i: silo_logits(s.model, xs) for i, s in sorted(fed.silos.items())}
            teacher = average_logits(fed, logits, xs)
            theta = fed.on_server(lambda: self.distill(theta, xs, teacher), template=theta)
            for i in fed.silos:  # the logits travel uncoded (compression codes model messages)
                fed.transport.book_server(i, up=message_bytes([teacher]), down=0)
        theta = fed.download_from_server(theta)
        for silo in fed.silos.values():
            load_state_tensors(silo.model, theta)
        return losses

    def distill(self, theta: list[torch.Tensor], xs: list[torch.Tensor], teacher: torch.Tensor) -> list[torch.Tensor]:
        """The server's ensemble distillation: Θ trained towards the average logits ``teacher``
        (steps, B, C) on the public batches ``xs`` with a fresh Adam; returns the new Θ."""
        if self._student is None:
            self._student = self.fed.new_model()
        student = self._student
        load_state_tensors(student, theta)
        student.train()
        optimizer = Adam(student.parameters(), lr=self.settings.lr)
        total = 0.0
        for x, z in zip(xs, teacher, strict=True):
            loss = softened_kl(student(x), z, self.settings.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        self.distill_loss = total / max(len(xs), 1)
        return state_tensors(student)
