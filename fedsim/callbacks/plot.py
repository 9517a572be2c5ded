"""``accuracy.png``: mean silo accuracy and Θ accuracy by round and by simulated network time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.callbacks.base import Callback
from fedsim.plots import plot_runs


class PlotWriter(Callback):
    def __init__(self, run_dir: str | Path, label: str) -> None:
        """``label``: how the plot's legend names the run (``RunPlan.label``)."""
        self.dir = Path(run_dir)
        self.label = label

    def on_run_end(self, summary: dict[str, Any] | None) -> None:
        if summary is None:
            return

        plot_runs([self.dir], self.dir / "accuracy.png", [self.label])
