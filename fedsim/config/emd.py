"""The ``emd:`` section: how FedEFM's EMD weights compare feature maps (:mod:`fedsim.emd`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fedsim.settings import Range

BACKENDS = ("exact", "cvxpylayers", "sinkhorn")
#: what ``emd.backend`` accepts: a solver, or "uniform" (FedEFM's ablation: w_ij = 1, no EMD)
WEIGHTINGS = (*BACKENDS, "uniform")


@dataclass
class EMDConfig:
    """The ``emd:`` section: the EMD weight w_ij between the local model and a returned expert."""

    backend: Literal[WEIGHTINGS] = "exact"  # exact | cvxpylayers | sinkhorn | uniform (ablation: w_ij = 1)
    grid: Annotated[int, Range(ge=1)] = 5  # feature maps pooled to grid×grid nodes
    grad: bool = True  # let the gradient flow through w_ij (the paper)
    normalize: bool = True  # divide by Σ_j w_ij
