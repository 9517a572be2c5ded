"""The ``checkpoint:`` section: how often a run's state is saved (:mod:`fedsim.checkpoint`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fedsim.settings import Range


@dataclass
class CheckpointConfig:
    """The ``checkpoint:`` section: how often the run's state is saved for ``--resume`` and restarts."""

    # save after round k when (k + 1) % every == 0 (after 10, 20, … completed rounds for 10) and
    # always after the last round; a crash repeats at most every − 1 rounds, with the same results
    every: Annotated[int, Range(ge=1)] = 1

    def due(self, k: int, rounds: int) -> bool:
        """Whether the state after round ``k`` (of ``rounds``) is saved."""
        return (k + 1) % self.every == 0 or k == rounds - 1
