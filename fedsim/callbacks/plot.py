"""``accuracy.png``: mean silo accuracy and Θ accuracy by round and by simulated network time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.callbacks.base import Callback
from fedsim.plots import plot_runs


class PlotWriter(Callback):
    def __init__(self, plan) -> None:
        self.dir = Path(plan.run_dir)
        self.label = plan.label

    def on_run_end(self, summary: dict[str, Any] | None) -> None:
        if summary is None:
            return

        plot_runs([self.dir], self.dir / "accuracy.png", [self.label])
