"""MDH-FL — federated learning for data and model heterogeneity (Madni, Umer & Foresti,
"Federated Learning for Data and Model Heterogeneity in Medical Imaging", arXiv:2308.00155, 2023).

Silos may run different architectures (``model.per_silo``, e.g. shufflenet, resnet10,
mobilenetv2, resnet12) and hold noisy labels (``data.label_noise`` μ). Clients "first train
their models on private data" (round 0: local training only); every later round k, every silo i:

  1. knowledge distribution — its softened class distribution p_i = softmax(f_{θ_i}(x_s)/T)
     (eval mode) on the round's ``mdhfl.align_steps`` public batches x_s (the same on every silo);
  2. alignment — one step per public batch on  T² · KL(p̄_{−i} ‖ softmax(f_{θ_i}(x_s)/T)),
     p̄_{−i} = Σ_{j≠i} ϑ_j n_j p_j / Σ_{j≠i} ϑ_j n_j, the *other* silos' mean distribution, with the
     silo's own alignment optimiser, kept across rounds and in its checkpoint;
  3. local update — ``train.local_steps`` steps on its private data with the symmetric
     cross-entropy α·CE + β·RCE (Wang et al. 2019, robust to label noise), "to prevent the local
     knowledge forgetting" that the alignment causes: a round ends on the silo's own data, so
     the model that is scored (and that the next round aligns) has just revisited it.

The paper sums KL(p_j ‖ q_i) over the other silos j; that sum and (N−1)·KL(p̄_{−i} ‖ q_i) differ
by a constant, so the mean target's gradient is the sum's divided by N−1 — a factor Adam's
per-coordinate normalisation cancels (up to its ε); the paper's optimiser is Adam.

Only distributions travel: one all-reduce of the ϑ-weighted sum of p over every silo (and of the
weights); silo i removes its own term. Bytes: p_i up, the sum down, per silo (on the star through
the coordinating server). With heterogeneous models no foundation Θ is formed; the score is
the silos' mean test accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.algorithms.public import OutputSharing, outputs_template, silo_logits
from fedsim.federation import Federation
from fedsim.losses import softened_kl, symmetric_cross_entropy
from fedsim.transport import message_bytes, weighted_sum


def others_mean(fed: Federation, probs: dict[int, torch.Tensor],
                batches: list[torch.Tensor]) -> dict[int, torch.Tensor | None]:
    """p̄_{−i} for each local silo i: the ϑ n-weighted mean of every *other* present silo's
    ``probs`` (on the public ``batches``), from one all-reduce of [Σ_j w_j p_j, Σ_j w_j]
    (float64: independent of the placement). None when no other silo contributes."""
    weights = fed.silo_weights()
    acc, total = weighted_sum({i: [p] for i, p in probs.items()}, weights, fed.device,
                              template=outputs_template(fed, batches))
    out = {}
    for i, p in probs.items():
        rest = total - weights[i]
        out[i] = None if rest <= 0 else ((acc - weights[i] * p.reshape(-1).double()) / rest).view(
            p.shape).to(p.dtype)
    return out


def alignment_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(target ‖ softmax(student/T)), batch mean (``target_probs`` already softened)."""
    return softened_kl(student_logits, target_probs, temperature, teacher_probs=True)


class MDHFL(OutputSharing):
    name = "mdhfl"
    title = "MDH-FL"
    section = "mdhfl"

    @property
    def public_steps(self) -> int:
        return self.settings.align_steps

    def exchanges_in(self, k: int) -> bool:
        return k > 0 and self.exchanges and self.public_steps > 0

    def local_loss(self, i, silo):
        c = self.settings
        return lambda m, x, y: symmetric_cross_entropy(m(x), y, c.sce_alpha, c.sce_beta)

    def round(self, k: int) -> dict[int, float]:
        if self.exchanges_in(k):
            self.align(k)  # 1.–2.
        return self.local_training()  # 3. (round 0: only this)

    def align(self, k: int) -> None:
        """Steps 1–2: every silo's distributions on round k's public batches, one all-reduce, and
        one alignment step per batch towards the other silos' mean."""
        fed, c = self.fed, self.settings
        xs = self.public.batches(k, c.align_steps)
        probs = {i: F.softmax(silo_logits(s.model, xs) / c.temperature, dim=-1)
                 for i, s in sorted(fed.silos.items())}
        targets = others_mean(fed, probs, xs)
        size = message_bytes(outputs_template(fed, xs))  # one silo's p (a rank may have none present)
        for i, silo in sorted(fed.silos.items()):
            fed.transport.book_server(i, up=size, down=size)
            if targets[i] is None:
                continue
            silo.model.train()
            for x, p in zip(xs, targets[i], strict=True):
                self.public_step(i, alignment_loss(silo.model(x), p, c.temperature))
