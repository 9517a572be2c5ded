"""The ``compression:`` section: how model messages are coded (:mod:`fedsim.compression`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fedsim.settings import Range

CODEC_KINDS = ("none", "fp16", "bf16", "int8", "topk")


@dataclass
class CompressionConfig:
    """The ``compression:`` section: how model messages are coded on every link (module docstring)."""

    kind: Literal[CODEC_KINDS] = "none"  # none | fp16 | bf16 | int8 | topk
    ratio: Annotated[float, Range(gt=0, le=1)] = 0.01  # topk: share of each tensor's values sent (k = ⌈ratio·n⌉)
    error_feedback: bool = True  # what a message drops is sent again later (see the module docstring)

    @property
    def active(self) -> bool:
        return self.kind != "none"
