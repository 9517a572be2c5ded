"""FedEFM — Multishot Foundation Federated Distillation (Do et al., "FedEFM: Federated Endovascular
Foundation Model with Unseen Data", ICRA 2025).

Round 0: every silo trains θ_i on its own data ξ_i.
Round k ≥ 1, for every silo i:
  1. overseas training — θ_i goes to each in-neighbour j ∈ N(i), which trains the visiting
     copy on its own data:  θ_{i→j} ← θ_{i→j} − α ∇L_c(θ_{i→j}, ξ_j)            (eq. 1)
  2. knowledge transfer — the expert θ̂_{i→j} returns to silo i;
  3. EMD-weighted distillation at i, experts frozen:
        θ_i ← θ_i − α Σ_j w_ij ∇ℓ_ij                                                (eq. 2)
        ℓ_ij = β T² KL(softmax(z_T/T) ‖ softmax(z_S/T)) + (1 − β) CE(z_S, y)          (eq. 11)
        w_ij = EMD similarity of the dense features of ξ_i under θ_i and θ̂_{i→j}     (eq. 3)
  4. aggregation, every round (``fedefm.aggregate: round``, the paper): in DFL each silo ends
     the round mixed along the topology (``fedefm.mix``; by default the authors' released
     rule θ_i ← ½ θ_i + ½ mean of the neighbours' models that visited i, trained on ξ_i); in CFL
     every silo starts the next round from Θ = Σ ϑ_i θ_i / Σ ϑ_i.
The runner forms the foundation model Θ by all-reduce at the end. ``fedefm.aggregate: end`` is
the ablation with no aggregation until then (the silos drift apart and Θ collapses).
Each distilling silo's metric record carries its round's mean s_ij, w_ij and KD / CE loss parts
(:class:`DistillTally`, :meth:`FedEFM.round_record`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.algorithms.base import Algorithm
from fedsim.algorithms.gossip import gossip_row, metropolis_hastings, mix
from fedsim.algorithms.settings import FedEFMConfig
from fedsim.config.emd import EMDConfig
from fedsim.emd import emd_similarity_many, load_solver
from fedsim.federation import BatchStream, load_state_tensors, state_tensors, train_steps
from fedsim.losses import softened_kl
from fedsim.models import logits_and_features
from fedsim.optim import (
    load_travelling_state,
    make_optimizer,
    reset_optimizer,
    travelling_factor,
    travelling_state,
    travelling_template,
)


def distillation_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, *, temperature: float, beta: float,
    per_sample: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of ℓ_ij (eq. 11): β T² KL(softmax(z_T/T) ‖ softmax(z_S/T)) and (1 − β) CE(z_S, y);
    batch means, or one value per sample with ``per_sample``."""
    if per_sample:
        kd = softened_kl(student_logits, teacher_logits, temperature, reduction="none")
        return beta * kd, (1.0 - beta) * F.cross_entropy(student_logits, y, reduction="none")
    kd = softened_kl(student_logits, teacher_logits, temperature)
    return beta * kd, (1.0 - beta) * F.cross_entropy(student_logits, y)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, *, temperature: float, beta: float,
    per_sample: bool = False,
) -> torch.Tensor:
    """ℓ_ij = β T² KL(softmax(z_T/T) ‖ softmax(z_S/T)) + (1 − β) CE(z_S, y)   (eq. 11); the
    batch mean, or one value per sample with ``per_sample``."""
    kd, ce = distillation_terms(student_logits, teacher_logits, y, temperature=temperature, beta=beta,
                                per_sample=per_sample)
    return kd + ce


def emd_similarities(student_feats: torch.Tensor, teacher_feats: list[torch.Tensor], emd_cfg,
                     per_sample: bool = False) -> torch.Tensor | None:
    """s_ij for every teacher, before any clamp or normalisation: the batch-mean EMD similarity,
    shape (teachers,), or one per sample, (teachers, B), with ``per_sample``; None under
    ``emd.backend: uniform``, which computes no EMD."""
    if emd_cfg.backend == "uniform":
        return None
    u = student_feats if emd_cfg.grad else student_feats.detach()
    # every teacher's and every sample's problem in one batch (one solver call, one autograd node)
    s = emd_similarity_many(u, [v.detach() for v in teacher_feats], backend=emd_cfg.backend, grid=emd_cfg.grid)
    return s if per_sample else s.mean(1)


def weights_from_similarities(similarities: torch.Tensor | None, shape: tuple[int, ...], emd_cfg,
                              device: torch.device) -> torch.Tensor:
    """w_ij from s_ij: clamped at 0 and, with ``emd.normalize``, divided by Σ_j w_ij; all ones
    (before normalisation) when ``similarities`` is None (the uniform ablation)."""
    if similarities is None:  # ablation: every returned expert counts the same
        w = torch.ones(shape, device=device)
        return w / w.sum(0) if emd_cfg.normalize else w
    w = similarities.clamp_min(0.0)
    if emd_cfg.normalize:
        w = w / w.sum(0).clamp_min(1e-8)
    return w


def emd_weights(student_feats: torch.Tensor, teacher_feats: list[torch.Tensor], emd_cfg,
                per_sample: bool = False) -> torch.Tensor:
    """w_ij for every teacher: the batch-mean EMD similarity, clamped at 0, optionally
    normalised by Σ_j w_ij; differentiable w.r.t. the student unless ``emd.grad`` is false.

    ``per_sample`` (DP-SGD): one weight per teacher and sample, shape (teachers, B) — a batch
    mean would let every sample's gradient depend on the others and void the per-sample bound."""
    shape = (len(teacher_feats), student_feats.shape[0]) if per_sample else (len(teacher_feats),)
    s = emd_similarities(student_feats, teacher_feats, emd_cfg, per_sample)
    return weights_from_similarities(s, shape, emd_cfg, student_feats.device)


class DistillTally:
    """What one silo's distillation did in one round, for its metric record (:meth:`record`).

    Per step it adds, detached and on the device, the batch mean of the weights w_ij actually
    used, the batch mean of the similarities s_ij (before clamp and normalisation; none under
    ``emd.backend: uniform``) and the two parts of the step's loss, kd = Σ_j w_ij·βT²KL_j and
    ce = Σ_j w_ij·(1−β)CE, whose sum is the loss the step minimised (under DP-SGD the batch means
    of the per-sample terms). :meth:`record` takes the means over the steps with one transfer."""

    def __init__(self, teachers: list[int]) -> None:
        self.teachers = teachers  # silo ids, in the order of the weights
        self.steps = 0
        self._sum: torch.Tensor | None = None  # Σ over steps of [w_1..w_n, kd, ce, s_1..s_n]

    def add(self, weights: torch.Tensor, similarities: torch.Tensor | None, kd: torch.Tensor,
            ce: torch.Tensor) -> None:
        n = len(self.teachers)
        parts = [weights.reshape(n, -1).mean(1), kd.reshape(1), ce.reshape(1)]
        if similarities is not None:
            parts.append(similarities.reshape(n, -1).mean(1))
        step = torch.cat([p.detach().double() for p in parts])
        self._sum = step if self._sum is None else self._sum + step
        self.steps += 1

    def record(self) -> dict[str, Any]:
        """``teacher_weights`` and ``teacher_similarity`` (each keyed by the teacher's silo id as
        a string; no similarity under ``uniform``), ``kd_loss`` and ``ce_loss``: means over the
        round's distillation steps; empty when no step distilled."""
        if self._sum is None:
            return {}
        n = len(self.teachers)
        mean = (self._sum / self.steps).tolist()
        rec: dict[str, Any] = {"teacher_weights": dict(zip(map(str, self.teachers), mean[:n]))}
        if len(mean) > n + 2:
            rec["teacher_similarity"] = dict(zip(map(str, self.teachers), mean[n + 2:]))
        rec["kd_loss"], rec["ce_loss"] = mean[n], mean[n + 1]
        return rec


def distill_step(
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    teachers: list[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: FedEFMConfig,
    emd: EMDConfig,
    weights: torch.Tensor | None = None,
    per_sample: bool = False,
    tally: DistillTally | None = None,
) -> tuple[float, float]:
    """One step of eq. 2 on batch (x, y) with FedEFM's ``settings`` (T, β) and the EMD weights of
    ``emd``. ``weights`` forces w_ij (tests, timing); otherwise they come from the EMD. ``per_sample`` (DP-SGD): the loss is the batch mean of Σ_j w_ij(x) ℓ_ij(x)
    with per-sample EMD weights. ``tally`` collects the step's weights, similarities and loss
    parts (no extra EMD). Returns (loss, seconds spent in the EMD)."""
    student.train()
    z_s, u = logits_and_features(student, x)
    with torch.no_grad():
        outputs = []
        for t in teachers:
            t.train()  # batch statistics, as the student: identical weights give identical outputs
            outputs.append(logits_and_features(t, x))
    emd_seconds, similarities = 0.0, None
    if weights is None:
        started = time.perf_counter()
        feats = [v for _, v in outputs]
        shape = (len(feats), u.shape[0]) if per_sample else (len(feats),)
        similarities = emd_similarities(u, feats, emd, per_sample=per_sample)
        weights = weights_from_similarities(similarities, shape, emd, u.device)
        emd_seconds = time.perf_counter() - started
    terms = [distillation_terms(z_s, z_t, y, temperature=settings.temperature, beta=settings.beta,
                                per_sample=per_sample)
             for z_t, _ in outputs]
    losses = torch.stack([kd + ce for kd, ce in terms])
    loss = (weights * losses).sum(0).mean() if per_sample else (weights * losses).sum()
    if tally is not None:
        with torch.no_grad():
            w = weights.detach()
            kd_part = (w * torch.stack([kd for kd, _ in terms])).sum(0).mean()
            ce_part = (w * torch.stack([ce for _, ce in terms])).sum(0).mean()
        tally.add(w, similarities, kd_part, ce_part)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), emd_seconds


def overseas_training(model: nn.Module, host_batches: BatchStream, steps: int, cfg, fed=None,
                      host: int | None = None, optimizer_state: list[torch.Tensor] | None = None,
                      optimizer: torch.optim.Optimizer | None = None) -> None:
    """Eq. 1: a visiting copy trains on the host's data with a fresh optimiser, or with the one
    that travelled with it (``optimizer_state``, :func:`fedsim.optim.travelling_state`); through
    the federation, on the host's privacy budget, when ``fed`` is given. ``optimizer``: one over
    ``model``'s parameters to reuse (reset, or loaded with ``optimizer_state``) instead of a new one."""
    if optimizer is None:
        optimizer = make_optimizer(model, cfg)
    elif optimizer_state is None:
        reset_optimizer(optimizer, cfg)
    if optimizer_state is not None:
        load_travelling_state(optimizer, optimizer_state)
    if fed is None:
        train_steps(model, optimizer, host_batches, steps)
    else:
        fed.train(model, optimizer, host, steps)


class FedEFM(Algorithm):
    name = "fedefm"
    title = "FedEFM"
    scenarios = ("dfl", "cfl", "cll", "standalone")
    round_trip = True  # θ_i goes out to j and the expert comes back
    needs_features = True  # the EMD weights compare dense feature maps
    privacy_note = ("the raw θ_i travels to other silos (overseas training), beyond any server average; "
                    "use privacy.mode: sample")

    @classmethod
    def private_steps(cls, cfg, scenario, graph, silo: int, k: int) -> int:
        # round 0 and no-exchange scenarios train locally; later rounds: one overseas stretch per
        # visitor hosted (the out-neighbours, whose models come to train on ξ_silo), then distillation
        if k == 0 or not scenario.exchanges:
            return cfg.train.local_steps
        return cfg.fedefm.distill_steps + cfg.fedefm.overseas_steps * graph.out_degree(silo)

    @classmethod
    def mix_inputs(cls, cfg, scenario, graph, silo: int) -> int | None:
        # hosted: the visitors silo hosts came from its out-neighbours (θ_i visits each j ∈ N_in(i))
        if not scenario.decentralized or cfg.fedefm.aggregate != "round":
            return None
        return 1 + (graph.out_degree(silo) if cfg.fedefm.mix == "hosted" else graph.in_degree(silo))

    @classmethod
    def feature_grid(cls, cfg) -> int | None:
        # the EMD pools each feature map to emd.grid × emd.grid nodes (none under the uniform ablation)
        return cfg.emd.grid if cfg.emd.backend != "uniform" else None

    def exchanges_in(self, k: int) -> bool:
        # round 0 is local training only; in CFL with per-round aggregation it already ends
        # with the upload to the server and the download of Θ
        return self.exchanges and (k > 0 or self._cfl_every_round)

    def __init__(self, fed) -> None:
        super().__init__(fed)
        self.emd_seconds = 0.0  # time spent computing EMD weights on this rank (benchmarks)
        self._spare: list[nn.Module] = []
        self._optimizers: dict[int, torch.optim.Optimizer] = {}  # a spare model's optimiser, reused per visit
        self._records: dict[int, dict[str, Any]] = {}  # this round's round_record per silo
        fe: FedEFMConfig = self.settings
        #: the ``emd:`` section: how the teachers' weights w_ij are computed (FedEFM's one input
        #: from the config besides its own section and ``train:``)
        self.emd: EMDConfig = fed.cfg.emd
        self._cfl_every_round = fed.scenario.via_server and fe.aggregate == "round"
        self._dfl_mix = fe.mix if fed.scenario.decentralized and fe.aggregate == "round" else None
        self._gossip_weights = metropolis_hastings(fed.topology) if self._dfl_mix == "gossip" else None
        #: expert_optimizer travels: the optimiser state that rides with each visiting θ_i (its shapes)
        self._rider = travelling_template(next(iter(fed.hosted.values())).optimizer) \
            if fe.expert_optimizer == "travels" else None
        # load the solver now, so its import (POT, cvxpy: ~1 s) is not billed to the first round
        load_solver(self.emd.backend)

    def request_factor(self) -> float:
        # θ_i goes out with its optimiser state; the expert comes back as weights only
        if self._rider is None:
            return 1.0
        silo = next(iter(self.fed.hosted.values()))
        return travelling_factor(silo.model, silo.optimizer)

    def _model_like(self, tensors: list[torch.Tensor]) -> nn.Module:
        model = self._spare.pop() if self._spare else self.fed.new_model()
        load_state_tensors(model, tensors)
        return model

    def round_record(self, i: int) -> dict[str, Any]:
        """Silo i's distillation this round (:class:`DistillTally`): ``teacher_weights``,
        ``teacher_similarity``, ``kd_loss``, ``ce_loss``; empty in a round it did not distil."""
        return self._records.get(i, {})

    def round(self, k: int) -> dict[int, float]:
        self._records = {}
        if k == 0 or not self.exchanges:
            losses = self.local_training()
            if self._cfl_every_round and self.exchanges:
                self._restart_from_theta(k)
            return losses
        fed, silos, cfg, fe = self.fed, self.fed.silos, self.cfg, self.settings
        arcs = fed.active_arcs(k)  # (j, i): j is an in-neighbour of i

        # 1. overseas: θ_i travels to each in-neighbour j (against the arc j → i), with its
        # optimiser state under expert_optimizer: travels
        rider = (lambda i, j: travelling_state(silos[i].optimizer)) if self._rider is not None else None
        visits = fed.exchange([(i, j) for j, i in arcs], lambda i, j: state_tensors(silos[i].model),
                              rider=rider, rider_template=self._rider)
        n_model = len(fed.state_template())
        experts: dict[tuple[int, int], list[torch.Tensor]] = {}
        for (i, j), tensors in sorted(visits.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            visitor = self._model_like(tensors[:n_model])
            if id(visitor) not in self._optimizers:
                self._optimizers[id(visitor)] = make_optimizer(visitor, cfg)
            overseas_training(visitor, silos[j].batches, fe.overseas_steps, cfg, fed, host=j,
                              optimizer_state=tensors[n_model:] if rider is not None else None,
                              optimizer=self._optimizers[id(visitor)])
            fed.charge(j, fe.overseas_steps)  # the host's compute
            experts[(j, i)] = [t.clone() for t in state_tensors(visitor)]
            self._spare.append(visitor)

        # 2. knowledge transfer: the expert θ̂_{i→j} returns from j to i (along the arc)
        returned = fed.exchange(arcs, lambda j, i: experts[(j, i)], channel="expert")
        if fed.scenario.via_server:
            fed.transport.relay_through_server()

        # 3. EMD-weighted distillation at every home silo
        losses: dict[int, float] = {}
        for i, silo in sorted(silos.items()):
            teacher_ids = [j for (j, dst) in sorted(returned) if dst == i]
            teachers = [self._model_like(returned[(j, i)]) for j in teacher_ids]
            fed.charge(i, fe.distill_steps)
            if not teachers:  # no active in-neighbour this round (multigraph / MATCHA): train locally
                losses[i] = fed.train(silo.model, silo.optimizer, i, fe.distill_steps)
                continue
            total, counted = 0.0, 0
            tally = DistillTally(teacher_ids)
            with fed.private_steps(silo.model, silo.optimizer, i) as optimizer:
                for _ in range(fe.distill_steps):
                    x, y = silo.batches.next()
                    if x.shape[0] == 0:  # an empty Poisson draw (DP-SGD): a noise-only step
                        optimizer.empty_step()
                        continue
                    loss, emd_s = distill_step(silo.model, optimizer, teachers, x, y, fe, self.emd,
                                               per_sample=fed.privacy.per_sample, tally=tally)
                    total += loss
                    counted += 1
                    self.emd_seconds += emd_s
            losses[i] = total / max(counted, 1)
            self._records[i] = tally.record()
            self._spare.extend(teachers)

        # 4. aggregation
        if self._cfl_every_round:
            self._restart_from_theta(k)
        elif self._dfl_mix == "hosted":  # experts[(j, i)] is at host j: θ_i trained on ξ_j
            self._mix({j: {i: t for (host, i), t in experts.items() if host == j} for j in silos})
        elif self._dfl_mix == "experts":
            self._mix({i: {j: t for (j, dst), t in returned.items() if dst == i} for i in silos})
        elif self._dfl_mix == "gossip":
            got = fed.exchange(arcs, lambda j, i: state_tensors(silos[j].model))
            self._mix({i: {j: t for (j, dst), t in got.items() if dst == i} for i in silos}, gossip=True)
        return losses

    def _mix(self, others: dict[int, dict[int, list[torch.Tensor]]], gossip: bool = False) -> None:
        """θ_i ← s·θ_i + (1 − s)·mean of ``others[i]`` (or, ``gossip``, the Metropolis–Hastings
        row of i over the neighbours heard this round), or a robust ``aggregation:`` rule over the same
        models and weights; every mix is computed before any model changes, since a co-located
        message may be the sender's own storage."""
        s = self.settings.self_weight
        mixed = {}
        for i, silo in self.fed.silos.items():
            got = others[i]
            if gossip:
                weights = gossip_row(self._gossip_weights[i], i, got)
            elif got:
                weights = {i: s, **{j: (1.0 - s) / len(got) for j in got}}
            else:  # nobody to mix with this round
                continue
            mixed[i] = mix(state_tensors(silo.model), weights, i, got, self.fed.aggregation)
        for i, tensors in mixed.items():
            load_state_tensors(self.fed.silos[i].model, tensors)

    def _restart_from_theta(self, k: int) -> None:
        """CFL: the server forms Θ (upload) and every silo starts the next round from it (download)."""
        theta = self.fed.server_round(k)
        for silo in self.fed.silos.values():
            load_state_tensors(silo.model, theta)
