"""What the algorithms that distil on an unlabeled public set share (FedDF, FedMD, MDH-FL):
the public set and its per-round batches, silo outputs on them, their ϑ-weighted average, and
the base of the algorithms whose silos exchange only outputs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fedsim.algorithms.base import Algorithm
from fedsim.config.data import DataConfig
from fedsim.data import derive_seed, load_public
from fedsim.federation import Federation, make_optimizer
from fedsim.transport import weighted_average

#: seed stream of the public-batch order (round k: ``derive_seed(seed, PUBLIC_STREAM, k)``)
PUBLIC_STREAM = 0xFEDDF


def public_batch_indices(n: int, batch_size: int, steps: int, seed: int, k: int) -> list[torch.Tensor]:
    """Indices of the ``steps`` public batches of round ``k``: one permutation of 0..n−1 drawn
    from ``derive_seed(seed, PUBLIC_STREAM, k)``, read in order, wrapping around when
    ``steps · batch_size > n``. Depends on nothing but its arguments (the same on every rank
    and after ``--resume``)."""
    g = torch.Generator().manual_seed(derive_seed(seed, PUBLIC_STREAM, k))
    perm = torch.randperm(n, generator=g)
    b = min(batch_size, n)
    return [perm[(s * b + torch.arange(b)) % n] for s in range(steps)]


def public_set(algo: Algorithm, samples: int) -> PublicSet:
    """The public set of ``algo``'s run: ``data:``'s public images, read as ``train:`` says."""
    return PublicSet(algo.cfg.data, samples, algo.seed, algo.train.batch_size, algo.fed.device)


class PublicSet:
    """The unlabeled public / proxy set, identical on every rank (its labels are never read)."""

    def __init__(self, data: DataConfig, samples: int, seed: int, batch_size: int, device: torch.device) -> None:
        """``samples`` images of the ``data:`` section's public set, on ``device``, read in
        batches of ``batch_size`` (``train.batch_size``) drawn from the run's ``seed``."""
        self.seed, self.batch_size = seed, batch_size
        self.images = load_public(data, samples, seed).images.to(device)

    def batches(self, k: int, steps: int) -> list[torch.Tensor]:
        idx = public_batch_indices(len(self.images), self.batch_size, steps, self.seed, k)
        return [self.images[i] for i in idx]


@torch.no_grad()
def silo_logits(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    """(steps, B, C): the model's logits on each public batch, eval mode (no statistic updated)."""
    was_training = model.training
    model.eval()
    out = torch.stack([model(x) for x in batches])
    model.train(was_training)
    return out


def outputs_template(fed: Federation, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """The shape of one silo's (steps, B, C) outputs on ``batches``, for a rank none of whose
    silos takes part in the round (it still joins the all-reduce)."""
    return [torch.empty(len(batches), batches[0].shape[0], fed.num_classes, device=fed.device)]


def average_logits(fed: Federation, logits: dict[int, torch.Tensor], batches: list[torch.Tensor]) -> torch.Tensor:
    """Σ ϑ_i n_i z_i / Σ ϑ_i n_i over every present silo of every rank (``batches``: the public
    batches they were computed on): one all-reduce of the logit tensors (summed in float64, so
    the result does not depend on the placement)."""
    return weighted_average({i: [z] for i, z in logits.items()}, fed.silo_weights(), fed.device,
                            template=outputs_template(fed, batches))[0]


class OutputSharing(Algorithm):
    """Silos exchange only their outputs on the public set, never weights (so their
    architectures may differ). Each silo keeps its own optimiser for the public-set steps
    (across rounds and in its checkpoint). Subclasses name their config ``section`` (with
    ``public_samples``) and the number of public batches per round, ``public_steps``."""

    natural_scenario = "cfl"
    scenarios = ("cfl", "cll", "standalone")
    shares_weights = False
    section = ""

    def __init__(self, fed: Federation) -> None:
        super().__init__(fed)
        self.settings = getattr(self.cfg, self.section)
        self.public = public_set(self, self.settings.public_samples) if self.exchanges else None
        self._public_opt = {i: make_optimizer(s.model, self.cfg) for i, s in fed.silos.items()}

    @property
    def public_steps(self) -> int:
        raise NotImplementedError

    def message_bits(self) -> float | None:
        """One silo's outputs on the round's public batches (float32), for the network clock."""
        if self.public is None or not self.public_steps:
            return None
        batch = min(self.train.batch_size, len(self.public.images))
        return float(self.public_steps * batch * self.fed.num_classes * 32)

    def public_step(self, i: int, loss: torch.Tensor) -> None:
        """One step of silo i's public-set optimiser on ``loss``."""
        optimizer = self._public_opt[i]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def silo_state(self, i: int) -> dict[str, Any]:
        return {"public_optimizer": self._public_opt[i].state_dict()}

    def load_silo_state(self, i: int, state: dict[str, Any]) -> None:
        if "public_optimizer" in state:
            self._public_opt[i].load_state_dict(state["public_optimizer"])
