"""What one rank draws its data from: the training (and validation) sets of the silos it hosts
and the test set (:func:`load_rank_data`), and each silo's endless stream of mini-batches
(:class:`BatchStream`), seeded per silo (:func:`silo_seed`) so that the same config gives the
same batches on 1, 2 or N ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedsim.data import SiloDataset, carve_validation, load_federated


def silo_seed(seed: int, silo: int, stream: int = 0) -> int:
    """A per-silo seed that does not depend on placement."""
    return (seed * 1_000_003 + silo * 7919 + stream * 104_729) % (2**62)


class BatchStream:
    """Endless shuffled mini-batches ξ of one silo's data, from the silo's own generator:
    (images, ``target``) with ``target`` "labels" (classification) or "masks" (segmentation)."""

    def __init__(self, dataset: Any, batch_size: int, seed: int, device: torch.device,
                 target: str = "labels") -> None:
        self.dataset = dataset
        self.target = target
        self.batch_size = min(batch_size, len(dataset))
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.dataset), generator=self.generator)
            self.pos = 0
        idx = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        target = getattr(self.dataset, self.target)[idx].long()  # masks may be stored as uint8
        return self.dataset.image_batch(idx).to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"], state["pos"]


@dataclass
class RankData:
    """The data a rank works with: its silos' training (and validation) sets, the test set."""

    train: list[Any]  # indexed by silo id; None for silos hosted elsewhere
    val: list[Any] | None  # the same for the validation splits, or None without one
    test: Any
    num_classes: int
    in_channels: int = 1


def load_rank_data(plan, rank: int) -> RankData:
    """The data of the silos ``rank`` hosts (each built bit-identically to building them all),
    with the data's own validation split, or ``data.validation_fraction`` carved off each; pooled
    into one silo when the scenario pools (CLL)."""
    cfg = plan.cfg
    n = plan.underlay.num_silos
    local = None if plan.scenario.pooled else plan.placement.silos_on(rank)
    # compact storage, silo by silo as generated: 8-bit images as uint8, masks only when the task
    # reads them (batches decode bit-identically; a classification silo no longer carries masks)
    data = load_federated(cfg.data, n, cfg.seed, silos=local, masks=cfg.task == "segmentation", compact=True)
    if data.val is not None:  # the data's own validation split (MedMNIST's)
        train, val = data.train, data.val
    else:
        train, val = carve_validation(data.train, cfg.data.validation_fraction, cfg.seed)
        if not cfg.data.validation_fraction:
            val = None
    if plan.scenario.pooled:
        train = [SiloDataset.concat(list(train), name="pooled")]
        val = [SiloDataset.concat(list(val), name="validation")] if val is not None else None
    return RankData(train, val, data.test, data.num_classes, data.in_channels)
