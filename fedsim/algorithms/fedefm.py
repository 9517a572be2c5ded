"""FedEFM — Multishot Foundation Federated Distillation (Do et al., ICRA 2025; SPEC §2).

Round 0: every silo trains θ_i on its own data ξ_i.
Round k ≥ 1, for every silo i:
  1. overseas training — θ_i goes to each in-neighbour j ∈ N(i), which trains the visiting
     copy on its own data:  θ_{i→j} ← θ_{i→j} − α ∇L_c(θ_{i→j}, ξ_j)            (eq. 1)
  2. knowledge transfer — the expert θ̂_{i→j} returns to silo i;
  3. EMD-weighted distillation at i, experts frozen:
        θ_i ← θ_i − α Σ_j w_ij ∇ℓ_ij                                                (eq. 2)
        ℓ_ij = β T² KL(softmax(z_T/T) ‖ softmax(z_S/T)) + (1 − β) CE(z_S, y)          (eq. 11)
        w_ij = EMD similarity of the dense features of ξ_i under θ_i and θ̂_{i→j}     (eq. 3)
The runner forms the foundation model Θ = Σ ϑ_i θ_i / Σ ϑ_i by all-reduce at the end.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.algorithms.base import SERVER, Algorithm
from fedsim.losses import softened_kl
from fedsim.models import logits_and_features
from fedsim.runtime import BatchStream, load_state_tensors, state_tensors, train_steps


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, *, temperature: float, beta: float
) -> torch.Tensor:
    """ℓ_ij = β T² KL(softmax(z_T/T) ‖ softmax(z_S/T)) + (1 − β) CE(z_S, y)   (eq. 11)."""
    kd = softened_kl(student_logits, teacher_logits, temperature)
    return beta * kd + (1.0 - beta) * F.cross_entropy(student_logits, y)


def emd_weights(student_feats: torch.Tensor, teacher_feats: list[torch.Tensor], emd_cfg) -> torch.Tensor:
    """w_ij for every teacher: the batch-mean EMD similarity, clamped at 0, optionally
    normalised by Σ_j w_ij; differentiable w.r.t. the student unless ``emd.grad`` is false."""
    from fedsim.emd import emd_similarity

    if emd_cfg.backend == "uniform":  # ablation: every returned expert counts the same
        w = torch.ones(len(teacher_feats), device=student_feats.device)
        return w / w.sum() if emd_cfg.normalize else w
    u = student_feats if emd_cfg.grad else student_feats.detach()
    w = torch.stack([
        emd_similarity(u, v.detach(), backend=emd_cfg.backend, grid=emd_cfg.grid).mean().clamp_min(0.0)
        for v in teacher_feats
    ])
    if emd_cfg.normalize:
        w = w / w.sum().clamp_min(1e-8)
    return w


def distill_step(
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    teachers: list[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg,
    weights: torch.Tensor | None = None,
) -> tuple[float, float]:
    """One step of eq. 2 on batch (x, y). ``weights`` forces w_ij (tests, the uniform ablation);
    otherwise they come from the EMD. Returns (loss, seconds spent in the EMD)."""
    student.train()
    z_s, u = logits_and_features(student, x)
    with torch.no_grad():
        outputs = []
        for t in teachers:
            t.train()  # batch statistics, as the student: identical weights give identical outputs
            outputs.append(logits_and_features(t, x))
    emd_seconds = 0.0
    if weights is None:
        started = time.perf_counter()
        weights = emd_weights(u, [v for _, v in outputs], cfg.emd)
        emd_seconds = time.perf_counter() - started
    fe = cfg.fedefm
    losses = torch.stack([
        distillation_loss(z_s, z_t, y, temperature=fe.temperature, beta=fe.beta) for z_t, _ in outputs
    ])
    loss = (weights * losses).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), emd_seconds


def overseas_training(model: nn.Module, host_batches: BatchStream, steps: int, cfg) -> None:
    """Eq. 1: a visiting copy trains on the host's data with a fresh optimiser."""
    from fedsim.runtime import make_optimizer

    train_steps(model, make_optimizer(model, cfg), host_batches, steps)


class FedEFM(Algorithm):
    name = "fedefm"
    title = "FedEFM"
    scenarios = ("dfl", "cfl", "cll", "standalone")
    round_trip = True  # θ_i goes out to j and the expert comes back
    needs_features = True  # the EMD weights compare dense feature maps

    def exchanges_in(self, k: int) -> bool:
        return k > 0 and self.exchanges  # round 0 is local training only

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self.emd_seconds = 0.0  # time spent computing EMD weights on this rank (benchmarks)
        self._spare: list[nn.Module] = []
        # load the solver now, so its import (POT, cvxpy: ~1 s) is not billed to the first round
        if self.cfg.emd.backend == "exact":
            import fedsim.emd.exact  # noqa: F401
        elif self.cfg.emd.backend == "cvxpylayers":
            import fedsim.emd.cvxpy_layer  # noqa: F401

    def _model_like(self, tensors: list[torch.Tensor]) -> nn.Module:
        model = self._spare.pop() if self._spare else self.fed.new_model()
        load_state_tensors(model, tensors)
        return model

    def round(self, k: int) -> dict[int, float]:
        if not self.exchanges_in(k):
            return self.local_training()
        fed, silos, cfg = self.fed, self.fed.silos, self.cfg
        arcs = fed.active_arcs(k)  # (j, i): j is an in-neighbour of i

        # 1. overseas: θ_i travels to each in-neighbour j (against the arc j → i)
        visits = fed.exchange([(i, j) for j, i in arcs], lambda i, j: state_tensors(silos[i].model))
        experts: dict[tuple[int, int], list[torch.Tensor]] = {}
        for (i, j), tensors in sorted(visits.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            visitor = self._model_like(tensors)
            overseas_training(visitor, silos[j].batches, cfg.fedefm.overseas_steps, cfg)
            experts[(j, i)] = [t.clone() for t in state_tensors(visitor)]
            self._spare.append(visitor)

        # 2. knowledge transfer: the expert θ̂_{i→j} returns from j to i (along the arc)
        returned = fed.exchange(arcs, lambda j, i: experts[(j, i)])
        if cfg.scenario == "cfl":
            self._book_through_server()

        # 3. EMD-weighted distillation at every home silo
        losses: dict[int, float] = {}
        for i, silo in sorted(silos.items()):
            teachers = [self._model_like(returned[(j, dst)]) for (j, dst) in sorted(returned) if dst == i]
            if not teachers:  # no active in-neighbour this round (multigraph / MATCHA): train locally
                losses[i] = train_steps(silo.model, silo.optimizer, silo.batches, cfg.fedefm.distill_steps)
                continue
            total = 0.0
            for _ in range(cfg.fedefm.distill_steps):
                x, y = silo.batches.next()
                loss, emd_s = distill_step(silo.model, silo.optimizer, teachers, x, y, cfg)
                total += loss
                self.emd_seconds += emd_s
            losses[i] = total / max(cfg.fedefm.distill_steps, 1)
            self._spare.extend(teachers)
        if cfg.fedefm.sync_every and k % cfg.fedefm.sync_every == 0:
            theta = fed.aggregate()
            for silo in silos.values():
                load_state_tensors(silo.model, theta)
        return losses

    def _book_through_server(self) -> None:
        """CFL: a message i → j really goes i → server → j; book both hops."""
        transport = self.fed.transport
        direct = transport.take_bytes()
        for (s, d), b in direct.items():
            transport.bytes_by_edge[(s, SERVER)] += b
            transport.bytes_by_edge[(SERVER, d)] += b
