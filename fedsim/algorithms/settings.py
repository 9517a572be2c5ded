"""The built-in algorithms' settings: one dataclass each, the config section named after the
algorithm (``fedefm:``, ``fedprox:``, …) and listed in :data:`fedsim.algorithms.REGISTRY`.

They live here, not in the algorithms' own modules, so that loading and checking a config reads
them without importing an algorithm (and torch); each algorithm reads its own as
``self.settings``. A plug-in algorithm keeps its ``Settings`` dataclass on its class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fedsim.settings import Range


@dataclass
class FedEFMConfig:
    """FedEFM's Multishot Foundation Distillation; symbols from the paper in comments."""

    overseas_steps: Annotated[int, Range(ge=1)] = 10  # steps a visiting copy θ_{i→j} trains on ξ_j (eq. 1)
    distill_steps: Annotated[int, Range(ge=1)] = 10  # steps of eq. 2 at the home silo per round
    temperature: Annotated[float, Range(gt=0)] = 3.0  # T, the distillation temperature of the KD term (eq. 11)
    beta: Annotated[float, Range(ge=0, le=1)] = 0.2  # β: weight of the KD term against CE (eq. 11)
    #: when the silos' weights meet: "round" (the paper: every round — DFL mixes each silo along
    #: the topology by ``mix``, CFL restarts every silo from Θ) or "end" (ablation: Θ only once,
    #: after the last round; the silos never mix and Θ collapses)
    aggregate: Literal["round", "end"] = "round"
    #: DFL mixing at the end of a round (aggregate: round), θ_i ← s·θ_i + (1 − s)·(mean of …):
    #: "hosted" — the neighbours' models that visited silo i this round, trained on ξ_i (the
    #: authors' released rule; no extra message); "experts" — silo i's own experts returned
    #: from its neighbours; "gossip" — Metropolis–Hastings with the neighbours' distilled models
    #: (one more message per arc). Chosen on a validation split (docs/fedefm.md).
    mix: Literal["hosted", "experts", "gossip"] = "hosted"
    self_weight: Annotated[float, Range(ge=0, le=1)] = 0.5  # s: the silo's own share in the mix (½ in the released code)
    #: the optimiser a visiting copy θ_{i→j} trains with at j: "fresh" (a new one per visit) or
    #: "travels" (θ_i's own, sent with it: moments, step count, LR schedule position, as the
    #: released code's deep copy of a model object carries them); the expert returns as weights
    #: only, its optimiser state after the visit dropped as the released code drops its copies'
    expert_optimizer: Literal["fresh", "travels"] = "fresh"


@dataclass
class FedEFMReleasedConfig:
    """The FedEFM authors' released rule (aioz-ai/FedEFM ``communication.py``): local steps, then
    each silo trains a copy of every in-neighbour's model on its own data and keeps
    ½ own + ½ the mean of those copies. No distillation, no EMD."""

    overseas_steps: Annotated[int, Range(ge=1)] = 1  # steps a neighbour's copy trains on the host's data (the code: 1)
    self_weight: Annotated[float, Range(ge=0, le=1)] = 0.5  # the silo's own share (the code: ½)
    #: the optimiser a neighbour's copy trains with at the host: "fresh" (a new one per copy) or
    #: "travels" (the neighbour's own state sent with its model, as the code's deep copy; dropped
    #: with the copy after the mix)
    expert_optimizer: Literal["fresh", "travels"] = "fresh"


@dataclass
class FedProxConfig:
    """FedProx (Li et al., MLSys 2020): local loss CE + μ/2 ‖w − w_global‖²."""

    mu: Annotated[float, Range(ge=0)] = 0.01  # μ, the proximal weight (the paper sweeps 0.001–1)


@dataclass
class MOONConfig:
    """MOON (Li, He & Song, CVPR 2021): CE + μ · model-contrastive loss on representations."""

    mu: Annotated[float, Range(ge=0)] = 1.0  # μ (the paper: 1 for most datasets, 5 for CIFAR-10)
    temperature: Annotated[float, Range(gt=0)] = 0.5  # τ, the temperature of the contrastive loss


SERVER_OPTIMIZERS = ("adam", "yogi", "adagrad", "sgd")


@dataclass
class FedOptConfig:
    """FedOpt (Reddi et al., ICLR 2021): the server's optimiser on the mean of the silos' updates.
    β1, β2 and τ are the paper's experimental settings; η is tuned per task in the paper (a grid
    over powers of 10), 0.01 is ours."""

    server_optimizer: Literal[SERVER_OPTIMIZERS] = "adam"  # adam (FedAdam) | yogi (FedYogi) | adagrad (FedAdagrad) | sgd (server_lr 1: FedAvg)
    server_lr: Annotated[float, Range(ge=0)] = 0.01  # η, the server's step size (ours; the paper tunes it per task)
    beta1: Annotated[float, Range(ge=0, lt=1)] = 0.9  # β1 of m_t (the paper's 0.9; adam, yogi and adagrad, as its Algorithm 2)
    beta2: Annotated[float, Range(ge=0, lt=1)] = 0.99  # β2 of v_t (the paper's 0.99; adam and yogi)
    tau: Annotated[float, Range(gt=0)] = 1e-3  # τ, the adaptivity in η m/(√v + τ), and v_{−1} = τ² (the paper's 1e-3)


@dataclass
class ScaffoldConfig:
    """SCAFFOLD (Karimireddy et al., ICML 2020), option II, with plain SGD local steps."""

    server_lr: Annotated[float, Range(gt=0)] = 1.0  # η_g, the global step size (the paper's experiments: 1)


@dataclass
class FedDFConfig:
    """FedDF (Lin et al., NeurIPS 2020): FedAvg, then the server distils the silos' ensemble
    (average logits) into Θ on an unlabeled public set."""

    distill_steps: Annotated[int, Range(ge=0)] = 10  # server Adam steps per round (0: plain FedAvg)
    lr: Annotated[float, Range(gt=0)] = 1e-3  # the server's Adam learning rate (the paper's)
    temperature: Annotated[float, Range(gt=0)] = 1.0  # T of the softened KL (the paper distils at T = 1)
    public_samples: Annotated[int, Range(ge=1)] = 256  # size of the unlabeled public / proxy set


@dataclass
class FedMDConfig:
    """FedMD (Li & Wang, 2019): silos share only logits on a public set; each digests the
    consensus, then revisits its private data. No weight averaging."""

    digest_steps: Annotated[int, Range(ge=0)] = 10  # steps matching the consensus per round (0: no exchange)
    loss: Literal["l1", "kl"] = "l1"  # l1 (the paper: mean absolute error on logits) | kl (T² KL of softened outputs)
    temperature: Annotated[float, Range(gt=0)] = 1.0  # T, used by loss: kl
    public_samples: Annotated[int, Range(ge=1)] = 256  # size of the unlabeled public set


@dataclass
class MDHFLConfig:
    """MDH-FL (Madni et al., 2023): symmetric cross-entropy locally, then KL alignment of softened class
    distributions on a public set; heterogeneous models via ``model.per_silo``."""

    align_steps: Annotated[int, Range(ge=0)] = 10  # alignment steps (public batches) per round (0: no exchange)
    temperature: Annotated[float, Range(gt=0)] = 1.0  # T of the softened distributions
    sce_alpha: Annotated[float, Range(ge=0)] = 0.1  # α of CE in the symmetric loss (Wang et al.'s CIFAR-10 setting)
    sce_beta: Annotated[float, Range(ge=0)] = 1.0  # β of the reverse CE
    public_samples: Annotated[int, Range(ge=1)] = 256  # size of the unlabeled public set
