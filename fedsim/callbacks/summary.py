"""``summary.json`` (the whole run) and ``summary.csv`` (one row per silo), written at the end."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fedsim.callbacks.base import Callback
from fedsim.checkpoint import atomic_write


class SummaryWriter(Callback):
    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)

    def on_run_end(self, summary: dict[str, Any] | None) -> None:
        if summary is None:
            return

        atomic_write(json.dumps(summary, indent=2), self.dir / "summary.json")  # never half a file
        rows = summary["silos"]
        if rows:
            with open(self.dir / "summary.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
