"""What one rank holds during a run: its silos (model, optimiser, data stream) and the helpers
algorithms use — local training, silo-to-silo exchange, evaluation, aggregation.

Nothing here depends on how silos are spread over ranks: each silo draws its mini-batches from
its own seeded generator, so the same config gives the same numbers on 1, 2 or N ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.config import ExperimentConfig
from fedsim.distributed import Placement
from fedsim.topology import Topology
from fedsim.transport import Key, Transport, flatten_state, weighted_average


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
        return (
            self.dataset.images[idx].to(self.device, non_blocking=True),
            getattr(self.dataset, self.target)[idx].to(self.device, non_blocking=True),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"], state["pos"]


@dataclass
class Silo:
    """One participant on this rank."""

    id: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: Any  # fedsim.data.SiloDataset
    batches: BatchStream
    status: int = 1  # ϑ_i: 1 when the silo contributes to the foundation model


def state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The model's full state (parameters and buffers) in a fixed order."""
    return list(model.state_dict().values())


def load_state_tensors(model: nn.Module, tensors: Iterable[torch.Tensor]) -> None:
    with torch.no_grad():
        for dst, src in zip(model.state_dict().values(), tensors, strict=True):
            dst.copy_(src)


def make_optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchStream,
    steps: int,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """``steps`` SGD steps on mini-batches from ``batches``; returns the mean loss."""
    model.train()
    total = 0.0
    for _ in range(steps):
        x, y = batches.next()
        loss = loss_fn(model, x, y) if loss_fn else F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / max(steps, 1)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, device: torch.device, batch_size: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``dataset``."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        x = dataset.images[start : start + batch_size].to(device)
        y = dataset.labels[start : start + batch_size].to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(dataset), 1)
    return loss / n, correct / n


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset: Any, device: torch.device,
                          batch_size: int = 64) -> tuple[float, float]:
    """(mean segmentation loss per image, mean foreground Dice over every pixel of the set, as
    :func:`fedsim.metrics.mean_dice` — the downstream stage's "dice") of a U-Net on the masks."""
    from fedsim.losses import segmentation_loss
    from fedsim.metrics import mean_dice

    model.eval()
    loss, preds = 0.0, []
    for start in range(0, len(dataset), batch_size):
        x = dataset.images[start : start + batch_size].to(device)
        y = dataset.masks[start : start + batch_size].to(device)
        logits = model(x)
        loss += segmentation_loss(logits, y).item() * x.shape[0]
        preds.append(logits.argmax(1).cpu())
    if not preds:
        return 0.0, float("nan")
    return loss / len(dataset), mean_dice(torch.cat(preds), dataset.masks.cpu(), num_classes=logits.shape[1])


def segmentation_step_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A silo's local loss in ``task: segmentation`` runs (cross-entropy + soft Dice)."""
    from fedsim.losses import segmentation_loss

    return segmentation_loss(model(x), y)


class Federation:
    """The silos on this rank plus everything an algorithm may ask for."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        topology: Topology,
        rank: int,
        world_size: int,
        device: torch.device,
        train_sets: list[Any],
        test_set: Any,
        num_classes: int,
        model_factory: Callable[[int | None], nn.Module],
    ) -> None:
        self.cfg = cfg
        self.topology = topology
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.placement = Placement(topology.num_silos, world_size)
        self.transport = Transport(self.placement, rank, device)
        self.test_set = test_set
        self.num_classes = num_classes
        self.model_factory = model_factory
        self.segmentation = cfg.task == "segmentation"
        #: the local training loss (None: cross-entropy on the labels)
        self.loss_fn = segmentation_step_loss if self.segmentation else None
        target = "masks" if self.segmentation else "labels"
        status = cfg.accumulation_status or [1] * topology.num_silos
        self.silos: dict[int, Silo] = {}
        for i in self.placement.silos_on(rank):
            model = self.new_model(i)
            self.silos[i] = Silo(
                id=i,
                model=model,
                optimizer=make_optimizer(model, cfg),
                data=train_sets[i],
                batches=BatchStream(train_sets[i], cfg.train.batch_size, silo_seed(cfg.seed, i), device, target),
                status=status[i],
            )

    @property
    def local_ids(self) -> list[int]:
        return sorted(self.silos)

    def new_model(self, silo: int | None = None) -> nn.Module:
        """A fresh model with the run's common initialisation (the same on every silo that has
        the architecture); ``silo`` picks the architecture when models are heterogeneous."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            model = self.model_factory(silo)
        return flatten_state(model.to(self.device))

    def scratch_model(self) -> nn.Module:
        """A model to load any state into (kept, so evaluation does not rebuild one per round)."""
        if not hasattr(self, "_scratch"):
            self._scratch = self.new_model()
        return self._scratch

    def exchange(
        self, arcs: Iterable[Key], payload: Callable[[int, int], list[torch.Tensor]]
    ) -> dict[Key, list[torch.Tensor]]:
        """Send ``payload(src, dst)`` along every arc (the same global list on every rank) and
        return the messages this rank's silos receive, keyed by (src, dst)."""
        arcs = list(arcs)
        template = state_tensors(next(iter(self.silos.values())).model)
        outgoing = {(s, d): payload(s, d) for s, d in arcs if s in self.silos}
        incoming = {(s, d): template for s, d in arcs if d in self.silos}
        return self.transport.exchange(outgoing, incoming)

    def active_arcs(self, k: int) -> list[Key]:
        """The arcs that exchange in round ``k``: all of them, except on a multigraph overlay
        (the round's state leaves weak arcs idle) and a MATCHA overlay (random matchings)."""
        topo = self.topology
        if any("parallel" in e.extra for e in topo.edges):
            from fedsim.netmodel import multigraph_active_arcs

            return sorted(multigraph_active_arcs(topo, k))
        if "matching_probabilities" in topo.extra:
            from fedsim.netmodel.overlays import matcha_active_arcs

            return sorted(matcha_active_arcs(topo, k, seed=self.cfg.seed))
        return topo.arcs

    def silo_weights(self) -> dict[int, float]:
        """ϑ_i n_i of this rank's silos (n_i = 1 unless weight_by_samples): each one's share of Θ."""
        return {i: s.status * (len(s.data) if self.cfg.weight_by_samples else 1.0) for i, s in self.silos.items()}

    def aggregate(self) -> list[torch.Tensor]:
        """Θ = Σ ϑ_i n_i θ_i / Σ ϑ_i n_i over every silo (n_i = 1 unless weight_by_samples)."""
        states = {i: state_tensors(s.model) for i, s in self.silos.items()}
        return weighted_average(states, self.silo_weights(), self.device)

    def evaluate(self, model: nn.Module) -> tuple[float, float]:
        """(test loss, test score): accuracy, or mean foreground Dice for ``task: segmentation``.

        A model whose state equals the last one evaluated is not evaluated again: after FedAvg
        every silo holds Θ, and the round's and the run's Θ scores are the same model too (6
        passes over the test set became 1; comparing states costs a tiny fraction of a pass)."""
        state = state_tensors(model)
        last = self.__dict__.get("_last_eval")
        if last is not None and len(last[0]) == len(state) and all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(last[0], state)):
            return last[1]
        if self.segmentation:
            result = evaluate_segmentation(model, self.test_set, self.device)
        else:
            result = evaluate(model, self.test_set, self.device)
        self._last_eval = ([t.detach().clone() for t in state], result)
        return result
