"""The seam between the round loop and its outputs (in the style of pfl-research's
``TrainingProcessCallback``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RoundReport:
    """What the loop knows after round ``round``."""

    round: int
    records: list[dict[str, Any]]  # one per silo hosted by this rank (see callbacks.jsonl)
    row: dict[str, Any] | None = None  # the round over every silo (rank 0; fedsim.summary.round_row)


class Callback:
    """Hooks of the round loop; every method is optional."""

    def on_run_start(self, start_round: int) -> None:
        """Before the first round to run (``start_round`` > 0 when resuming)."""

    def on_round_end(self, report: RoundReport) -> None:
        """After each round, once its records are complete."""

    def on_run_end(self, summary: dict[str, Any] | None) -> None:
        """After the last round and the final Θ (the summary on rank 0, None elsewhere)."""

    def close(self) -> None:
        """Always called last, also when the run fails (release files, stop progress bars)."""


class CallbackList(Callback):
    """Several callbacks called in order."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_run_start(self, start_round: int) -> None:
        for c in self.callbacks:
            c.on_run_start(start_round)

    def on_round_end(self, report: RoundReport) -> None:
        for c in self.callbacks:
            c.on_round_end(report)

    def on_run_end(self, summary: dict[str, Any] | None) -> None:
        for c in self.callbacks:
            c.on_run_end(summary)

    def close(self) -> None:
        for c in self.callbacks:
            c.close()
