"""FedDF — ensemble distillation for robust model fusion (Lin, Kong, Stich & Jaggi, NeurIPS 2020).

A round: every silo trains locally (as FedAvg); the server forms Θ = Σ ϑ_i n_i θ_i / Σ ϑ_i n_i
(FedAvg's average), then distils the silos' ensemble into Θ on an unlabeled public set:
for ``feddf.distill_steps`` steps, on public batch x_s,

    Θ ← Adam step on  T² · KL( softmax(z̄_s / T) ‖ softmax(f_Θ(x_s) / T) ),
    z̄_s = Σ ϑ_i n_i f_{θ_i}(x_s) / Σ ϑ_i n_i   (the ensemble's average logits, FedDF's AvgLogits)

with a fresh Adam (lr ``feddf.lr``) each round; every silo then loads the distilled Θ.

Communication: each rank computes its own silos' logits (eval mode, no gradient) on the same
public batches and one ``all_reduce`` of those small logit tensors forms z̄ (no model is sent for
it). The server's distillation runs on rank 0 only and Θ is broadcast, so every rank holds the
identical Θ whatever the placement. Bytes are booked on the star through the server: each silo
uploads its model and its logits and downloads Θ.

Not done (the paper's choices we leave out): early stopping of the distillation on a validation
set, and the public set is the synthetic generator's own stream (``fedsim.data.load_public``),
never its labels. The helpers below (public batches, logit averaging, broadcast, softened KL)
are shared with FedMD.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from fedsim.algorithms.base import SERVER
from fedsim.algorithms.fedavg import FedAvg
from fedsim.losses import softened_kl
from fedsim.runtime import Federation, load_state_tensors, state_tensors
from fedsim.transport import message_bytes, pack, unpack, weighted_average

#: seed stream of the public-batch order (round k: ``derive_seed(seed, PUBLIC_STREAM, k)``)
PUBLIC_STREAM = 0xFEDDF


def public_batch_indices(n: int, batch_size: int, steps: int, seed: int, k: int) -> list[torch.Tensor]:
    """Indices of the ``steps`` public batches of round ``k``: one permutation of 0..n−1 drawn
    from ``derive_seed(seed, PUBLIC_STREAM, k)``, read in order, wrapping around when
    ``steps · batch_size > n``. Depends on nothing but its arguments (the same on every rank
    and after ``--resume``)."""
    from fedsim.data import derive_seed

    g = torch.Generator().manual_seed(derive_seed(seed, PUBLIC_STREAM, k))
    perm = torch.randperm(n, generator=g)
    b = min(batch_size, n)
    return [perm[(s * b + torch.arange(b)) % n] for s in range(steps)]


class PublicSet:
    """The unlabeled public / proxy set, identical on every rank (its labels are never read)."""

    def __init__(self, fed: Federation, samples: int) -> None:
        from fedsim.data import load_public

        self.cfg = fed.cfg
        self.images = load_public(fed.cfg.data, samples, fed.cfg.seed).images.to(fed.device)

    def batches(self, k: int, steps: int) -> list[torch.Tensor]:
        idx = public_batch_indices(len(self.images), self.cfg.train.batch_size, steps, self.cfg.seed, k)
        return [self.images[i] for i in idx]


@torch.no_grad()
def silo_logits(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    """(steps, B, C): the model's logits on each public batch, eval mode (no statistic updated)."""
    was_training = model.training
    model.eval()
    out = torch.stack([model(x) for x in batches])
    model.train(was_training)
    return out


def average_logits(fed: Federation, logits: dict[int, torch.Tensor]) -> torch.Tensor:
    """Σ ϑ_i n_i z_i / Σ ϑ_i n_i over every silo of every rank: one all-reduce of the logit
    tensors (summed in float64, so the result does not depend on the placement)."""
    return weighted_average({i: [z] for i, z in logits.items()}, fed.silo_weights(), fed.device)[0]


def broadcast_from_rank0(fed: Federation, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rank 0's ``tensors`` on every rank (other ranks pass tensors of the same shapes and
    dtypes as templates): one ``dist.broadcast`` of the packed bytes."""
    if not dist.is_initialized() or fed.world_size == 1:
        return tensors
    buf = pack([tensors], fed.device)  # rank 0: what is sent; elsewhere: only its size is used
    if fed.rank != 0:
        buf = torch.empty_like(buf)  # never receive into ``tensors`` (pack may return their storage)
    dist.broadcast(buf, src=0)
    return tensors if fed.rank == 0 else unpack(buf, [tensors])[0]


class FedDF(FedAvg):
    name = "feddf"

    def __init__(self, fed: Federation) -> None:
        super().__init__(fed)
        self.public = PublicSet(fed, self.cfg.feddf.public_samples) if self.exchanges else None
        self._student: nn.Module | None = None  # the server's model (rank 0)
        self.distill_loss = 0.0  # last round's mean distillation loss (rank 0)

    def round(self, k: int) -> dict[int, float]:
        losses = self.local_training()
        if not self.exchanges:
            return losses
        fed, cfg = self.fed, self.cfg.feddf
        theta = fed.aggregate()
        logit_bytes = 0
        if cfg.distill_steps > 0:
            xs = self.public.batches(k, cfg.distill_steps)
            logits = {i: silo_logits(s.model, xs) for i, s in sorted(fed.silos.items())}
            teacher = average_logits(fed, logits)
            if fed.rank == 0:
                theta = self.distill(theta, xs, teacher)
            theta = broadcast_from_rank0(fed, theta)
            logit_bytes = message_bytes([teacher])
        size = message_bytes(theta)
        for i, silo in fed.silos.items():
            fed.transport.bytes_by_edge[(i, SERVER)] += size + logit_bytes
            fed.transport.bytes_by_edge[(SERVER, i)] += size
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
        optimizer = torch.optim.Adam(student.parameters(), lr=self.cfg.feddf.lr)
        total = 0.0
        for x, z in zip(xs, teacher, strict=True):
            loss = softened_kl(student(x), z, self.cfg.feddf.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        self.distill_loss = total / max(len(xs), 1)
        return state_tensors(student)
