"""``metrics/silo_<i>.jsonl``: one JSON record per round and silo, written by the rank that
hosts the silo — and the one reader of those files (resume history, plots, paper tables).

A record: ``round, silo, loss, test_loss, accuracy[, val_accuracy], foundation_accuracy[,
foundation_val_accuracy], bytes_sent, bytes_by_dst, grad_steps, round_time_s, wall_time_s,
sim_time_ms`` (``bytes_from_server`` for CFL), and the algorithm's own keys
(:meth:`fedsim.algorithms.base.Algorithm.round_record`; FedEFM: ``teacher_weights``,
``teacher_similarity``, ``kd_loss``, ``ce_loss``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fedsim.callbacks.base import Callback, RoundReport


class MetricsWriter(Callback):
    def __init__(self, run_dir: str | Path, silos: list[int]) -> None:
        """``silos``: the silos this rank hosts (one file each)."""
        self.dir = Path(run_dir) / "metrics"
        self.files = {i: self.dir / f"silo_{i}.jsonl" for i in silos}

    def on_run_start(self, start_round: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in self.files.values():
            lines = path.read_text().splitlines() if path.exists() and start_round > 0 else []
            # a resumed run drops the rounds after the checkpoint it continues from
            # a line torn by a crash mid-write is dropped with the rounds to be run again
            lines = [ln for ln in lines if (rec := _parse(ln)) is not None and rec["round"] < start_round]
            # through a temporary file: a crash here must not lose the rounds already recorded
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(ln + "\n" for ln in lines))
            os.replace(tmp, path)

    def on_round_end(self, report: RoundReport) -> None:
        for rec in report.records:
            with open(self.files[rec["silo"]], "a") as fh:
                fh.write(json.dumps(rec) + "\n")


def _parse(line: str) -> dict[str, Any] | None:
    """A record, or None for a line a crash cut short (only ever the last line of a file)."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def metric_files(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / "metrics").glob("silo_*.jsonl"))


def read_records(run_dir: str | Path, last_round: int | None = None) -> dict[int, list[dict[str, Any]]]:
    """Every silo's records of a run grouped by round (rounds ascending), optionally only up to
    ``last_round``."""
    by_round: dict[int, list[dict[str, Any]]] = {}
    for path in metric_files(run_dir):
        for line in path.read_text().splitlines():
            rec = _parse(line)
            if rec is None:
                continue
            if last_round is None or rec["round"] <= last_round:
                by_round.setdefault(rec["round"], []).append(rec)
    return dict(sorted(by_round.items()))
