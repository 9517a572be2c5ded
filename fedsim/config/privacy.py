"""The ``privacy:`` section: DP-SGD per silo or DP-FedAvg (:mod:`fedsim.privacy`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fedsim.errors import ConfigError
from fedsim.settings import Range

PRIVACY_MODES = ("none", "sample", "client")
#: the built-in models Opacus cannot give per-sample gradients (checked on the model itself)
OPACUS_INCOMPATIBLE = "shufflenet (always BatchNorm), r50-vit (nn.MultiheadAttention), any model with model.norm: batch"


@dataclass
class PrivacyConfig:
    """The ``privacy:`` section: DP-SGD per silo or DP-FedAvg (the module docstring)."""

    mode: Literal[PRIVACY_MODES] = "none"  # none | sample (DP-SGD per silo) | client (DP-FedAvg)
    noise_multiplier: Annotated[float, Range(ge=0)] | None = None  # σ, the Gaussian noise multiplier; or give target_epsilon
    max_grad_norm: Annotated[float, Range(gt=0)] = 1.0  # sample: per-sample gradient bound C; client: update bound S
    delta: Annotated[float, Range(gt=0, lt=1)] = 1e-5  # δ of (ε, δ)-DP; must be below 1/n
    target_epsilon: Annotated[float, Range(gt=0)] | None = None  # ε to reach after the last round (sets σ)
    #: sample mode: ``poisson`` — each sample joins a step's batch with probability q = B/n, the
    #: sampling the RDP accountant's guarantee is for; ``shuffle`` — the fixed-size shuffled
    #: batches of a non-private run, accounted at q = B/n as Opacus does without Poisson sampling
    #: (the common approximation; it lets a private run use exactly a non-private run's batches)
    sampling: Literal["poisson", "shuffle"] = "poisson"

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def validate(self) -> None:
        if not self.active:
            return
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(f"privacy.mode {self.mode} needs exactly one of privacy.noise_multiplier (σ) and "
                              "privacy.target_epsilon (σ found by Opacus)")
