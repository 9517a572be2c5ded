"""FedMD — heterogeneous federated learning via model distillation (Li & Wang, 2019), here
with the same architecture on every silo.

Silos never exchange weights, only class scores on a shared unlabeled public set (so the
silos' architectures may differ: ``shares_weights = False``). Round 0 is
private training only (FedMD's models start from training on their own data; its transfer
learning on a *labeled* public set is left out: the public set's labels are never read). Every
later round k:

  1. communicate — every silo computes its logits f_{θ_i}(x_s) (eval mode) on the round's
     ``fedmd.digest_steps`` public batches x_s, the same batches on every silo;
  2. aggregate — the consensus c_s = Σ ϑ_i n_i f_{θ_i}(x_s) / Σ ϑ_i n_i, by one all-reduce of
     the logit tensors (the only communication; bytes: logits up, consensus down per silo);
  3. digest — each silo takes one step per public batch towards the consensus:
        ``fedmd.loss: l1`` (default, FedMD's): mean |f_{θ_i}(x_s) − c_s| over batch and classes,
        ``fedmd.loss: kl``: T² KL(softmax(c_s/T) ‖ softmax(f_{θ_i}(x_s)/T));
     with its own digest optimiser (``train.optimizer``/``train.lr``, kept across rounds and in
     the checkpoint, as FedMD compiles the logit-matching model separately);
  4. revisit — ``train.local_steps`` steps on the silo's private data (its own optimiser).

There is no weight averaging: the runner forms no foundation Θ (an average of separately
trained models scored 21% where the silos averaged 40%); the score is the silos' mean accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.algorithms.public import OutputSharing, average_logits, silo_logits
from fedsim.losses import softened_kl
from fedsim.transport import message_bytes


def digest_loss(student_logits: torch.Tensor, consensus: torch.Tensor, loss: str, temperature: float) -> torch.Tensor:
    """FedMD's digest objective: L1 on logits (mean absolute error) or the softened T² KL."""
    if loss == "l1":
        return F.l1_loss(student_logits, consensus)
    return softened_kl(student_logits, consensus, temperature)


class FedMD(OutputSharing):
    name = "fedmd"
    title = "FedMD"
    section = "fedmd"

    @property
    def public_steps(self) -> int:
        return self.settings.digest_steps

    def exchanges_in(self, k: int) -> bool:
        return k > 0 and self.exchanges and self.public_steps > 0

    def round(self, k: int) -> dict[int, float]:
        if not self.exchanges_in(k):
            return self.local_training()
        fed, cfg = self.fed, self.settings
        xs = self.public.batches(k, cfg.digest_steps)
        logits = {i: silo_logits(s.model, xs) for i, s in sorted(fed.silos.items())}  # 1. communicate
        consensus = average_logits(fed, logits, xs)  # 2. aggregate
        size = message_bytes([consensus])
        for i, silo in sorted(fed.silos.items()):  # 3. digest
            fed.transport.book_server(i, up=size, down=size)
            silo.model.train()
            for x, c in zip(xs, consensus, strict=True):
                self.public_step(i, digest_loss(silo.model(x), c, cfg.loss, cfg.temperature))
        return self.local_training()  # 4. revisit
