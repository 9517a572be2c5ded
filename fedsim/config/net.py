"""The ``net:`` section: constants of the simulated network clock (:mod:`fedsim.netmodel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fedsim.settings import Range

DEFAULT_ACCESS_GBPS = 10.0  # each silo's access link (MultigraphFL)


@dataclass
class NetConfig:
    """The ``net:`` section: constants of the simulated network clock; None: derived
    from the run."""

    model_bits: Annotated[float, Range(gt=0)] | None = None  # M: bits of one model copy; default: the trained model's size in bits
    compute_ms: Annotated[float, Range(ge=0)] | None = None  # T_c (ms); default: measured local compute time per round
    access_gbps: Annotated[float, Range(gt=0)] = DEFAULT_ACCESS_GBPS  # each silo's access link, Gbit/s each way
    #                                              (a silo's own access_gbps in the topology wins)
