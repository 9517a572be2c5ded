"""Fault injection, one component of the round loop (tests and drills).

``FEDSIM_FAULT="stall:RANK:ROUND"`` makes that rank hang at the start of that round,
``"die:RANK:ROUND"`` makes it exit abruptly — what a lost or stalled hospital looks like to the
others."""

from __future__ import annotations

import os
import time


class FaultInjector:
    def __init__(self, rank: int, spec: str | None = None) -> None:
        self.rank = rank
        self.spec = spec if spec is not None else os.environ.get("FEDSIM_FAULT", "")

    def before_round(self, k: int) -> None:
        if not self.spec:
            return
        kind, rank, when = self.spec.split(":")
        if int(rank) != self.rank or int(when) != k:
            return
        if kind == "die":
            os._exit(9)
        time.sleep(10**6)
