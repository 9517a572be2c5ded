"""Sample-level DP: DP-SGD per silo with Opacus.

Opacus does the private part — per-sample gradients (``GradSampleModule`` hooks), clipping, noise
(``DPOptimizer``), Poisson sampling (``UniformWithReplacementSampler``) and the RDP accounting
(``RDPAccountant``); this module only wires them to the silos:

* a **session** (:meth:`SampleDP.session`) wraps one stretch of steps of one model on one silo's
  data: Opacus' hooks on the model, its ``DPOptimizer`` around the optimizer the algorithm keeps
  (Adam's moments live on across sessions), noise drawn from the *data owner's* generator and
  every step booked on the *data owner's* accountant — a visiting FedEFM model trained on host j
  spends j's budget, whoever owns the model;
* each silo draws its batches by Poisson sampling at rate q = B/n (``privacy.sampling: poisson``)
  from its own seeded generator, so runs stay placement-free and repeatable; a draw with no sample
  is still a step (noise only), as DP-SGD's analysis requires.

Losses must be means of per-sample terms: every built-in local loss is, and FedEFM weights its
teachers per sample under DP-SGD (:attr:`SampleDP.per_sample`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from fedsim.data.rank import silo_seed
from fedsim.privacy.base import NoPrivacy
from fedsim.privacy.plan import PrivacyPlan

NOISE_STREAM = 0xD95  # the seed stream of each silo's DP noise (fedsim.data.rank.silo_seed)


class PoissonBatches:
    """A silo's batches under Poisson sampling: every sample joins a step's batch independently
    with probability q (Opacus' ``UniformWithReplacementSampler``), from the silo's own generator.
    The interface of :class:`fedsim.data.rank.BatchStream`; a batch may be empty."""

    def __init__(self, dataset: Any, sample_rate: float, seed: int, device: torch.device,
                 target: str = "labels") -> None:
        self.dataset = dataset
        self.target = target
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = UniformWithReplacementSampler(num_samples=len(dataset), sample_rate=sample_rate,
                                                     generator=self.generator, steps=1)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.tensor(next(iter(self.sampler)), dtype=torch.long)
        target = getattr(self.dataset, self.target)[idx].long()  # masks may be stored as uint8
        return self.dataset.image_batch(idx).to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class SiloDPOptimizer(DPOptimizer):
    """Opacus' ``DPOptimizer`` that can also take the step of an empty Poisson batch."""

    def empty_step(self) -> None:
        """The step of a batch with no sample: per-sample gradients of zero rows, so Opacus adds
        its noise to a zero sum and the accountant books the step."""
        for p in self.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.step()
        self.zero_grad(set_to_none=True)


@contextmanager
def dp_session(model: nn.Module, optimizer: torch.optim.Optimizer, *, noise_multiplier: float, max_grad_norm: float,
               expected_batch_size: int, generator: torch.Generator | None, accountant: RDPAccountant,
               sample_rate: float) -> Iterator[SiloDPOptimizer]:
    """Opacus on ``model`` for a stretch of steps: its per-sample-gradient hooks on the model, its
    ``DPOptimizer`` (clip to ``max_grad_norm``, noise σ·C from ``generator``, divide by
    ``expected_batch_size``) around ``optimizer``, each step booked on ``accountant`` at
    ``sample_rate``. Afterwards the model is an ordinary model again."""
    # Opacus' backward hooks forbid an in-place activation right after a hooked layer; the
    # out-of-place version computes the same values
    inplace = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for m in inplace:
        m.inplace = False
    with warnings.catch_warnings():
        # "full backward hook ... no inputs require gradients": the first layer sees the images
        warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
        gsm = GradSampleModule(model, loss_reduction="mean")
        dp = SiloDPOptimizer(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                             expected_batch_size=expected_batch_size, generator=generator)
        dp.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
        try:
            yield dp
        finally:
            dp.zero_grad(set_to_none=True)
            gsm._close()  # hooks and Opacus' attributes off the model
            for p in model.parameters():
                p.__dict__.pop("summed_grad", None)
            for m in inplace:
                m.inplace = True


class SampleDP(NoPrivacy):
    """DP-SGD on every silo of this rank (module docstring)."""

    mode = "sample"
    per_sample = True

    def __init__(self, plan: PrivacyPlan, fed) -> None:
        self.plan = plan
        local = fed.placement.silos_on(fed.rank)
        self.accountants = {i: RDPAccountant() for i in local}
        self.noise = {i: torch.Generator(device=fed.device).manual_seed(silo_seed(fed.cfg.seed, i, NOISE_STREAM))
                      for i in local}

    def batch_stream(self, silo: int, dataset, batch_size: int, seed: int, device, target: str):
        if self.plan.sampling == "poisson":
            return PoissonBatches(dataset, self.plan.sample_rates[silo], seed, device, target)
        return super().batch_stream(silo, dataset, batch_size, seed, device, target)

    def session(self, model: nn.Module, optimizer: torch.optim.Optimizer, owner: int):
        plan = self.plan
        return dp_session(model, optimizer, noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm,
                          expected_batch_size=plan.batch_sizes[owner], generator=self.noise[owner],
                          accountant=self.accountants[owner], sample_rate=plan.sample_rates[owner])

    def epsilon(self, silo: int) -> float:
        """ε spent so far on silo ``silo``'s data (Opacus RDP accountant, δ = privacy.delta)."""
        acc = self.accountants[silo]
        if not acc.history:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimal order is the largest alpha"
            return float(acc.get_epsilon(delta=self.plan.delta))

    def steps(self, silo: int) -> int:
        return sum(n for _, _, n in self.accountants[silo].history)

    def record(self, silo: int) -> dict[str, Any]:
        return {"epsilon": self.epsilon(silo), "dp_steps": self.steps(silo)}

    def silo_state(self, silo: int) -> dict[str, Any]:
        return {"accountant": self.accountants[silo].state_dict(), "noise": self.noise[silo].get_state()}

    def load_silo_state(self, silo: int, state: dict[str, Any]) -> None:
        if "accountant" in state:
            self.accountants[silo].load_state_dict(state["accountant"])
            self.noise[silo].set_state(state["noise"])
