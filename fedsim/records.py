"""Per-round metrics files: ``metrics/silo_<i>.jsonl``, one JSON record per round and silo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Recorder:
    """Per-silo JSONL metrics, written by the rank that hosts the silo."""

    def __init__(self, run_dir: Path, silos: list[int], resume_round: int | None) -> None:
        self.dir = run_dir / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files = {i: self.dir / f"silo_{i}.jsonl" for i in silos}
        for path in self.files.values():
            lines = path.read_text().splitlines() if path.exists() else []
            if resume_round is None:
                lines = []
            else:  # drop rounds after the checkpoint we resume from
                lines = [ln for ln in lines if json.loads(ln)["round"] <= resume_round]
            path.write_text("".join(ln + "\n" for ln in lines))

    def write(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            with open(self.files[rec["silo"]], "a") as fh:
                fh.write(json.dumps(rec) + "\n")


def metric_files(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / "metrics").glob("silo_*.jsonl"))


def read_records(run_dir: str | Path, last_round: int | None = None) -> dict[int, list[dict[str, Any]]]:
    """Every silo's records of a run grouped by round (rounds ascending), optionally only up to
    ``last_round``."""
    by_round: dict[int, list[dict[str, Any]]] = {}
    for path in metric_files(run_dir):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if last_round is None or rec["round"] <= last_round:
                by_round.setdefault(rec["round"], []).append(rec)
    return dict(sorted(by_round.items()))
