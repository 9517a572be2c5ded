"""TensorBoard event files under ``RUN_DIR/tensorboard/`` (``log.tensorboard: true``).

Scalars per silo (``silo_<i>/accuracy``, ``silo_<i>/loss``, ``silo_<i>/test_loss``; in FedEFM's
distillation rounds also ``silo_<i>/kd_loss``, ``silo_<i>/ce_loss`` and, per teacher j,
``silo_<i>/teacher_weight/<j>``, ``silo_<i>/teacher_similarity/<j>``), for Θ
(``foundation/accuracy``, ``foundation/val_accuracy``) and their mean over silos
(``silos/mean_accuracy``), each twice: by round (step = round) under ``round/``, and by simulated
network time (step = the round's simulated time in whole ms) under ``sim_time_ms/`` — the same
numbers as ``metrics/*.jsonl``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.callbacks.base import Callback, RoundReport


def round_scalars(records: list[dict[str, Any]]) -> dict[str, float]:
    """The scalars of one round from every silo's JSONL records."""
    out: dict[str, float] = {}
    for rec in records:
        for key in ("accuracy", "loss", "test_loss", "kd_loss", "ce_loss"):
            if rec.get(key) is not None:
                out[f"silo_{rec['silo']}/{key}"] = rec[key]
        for key, name in (("teacher_weights", "teacher_weight"), ("teacher_similarity", "teacher_similarity")):
            for j, value in (rec.get(key) or {}).items():
                out[f"silo_{rec['silo']}/{name}/{j}"] = value
    accs = [r["accuracy"] for r in records if r.get("accuracy") is not None]
    if accs:
        out["silos/mean_accuracy"] = sum(accs) / len(accs)
    first = records[0]
    for key, tag in (("foundation_accuracy", "foundation/accuracy"), ("foundation_val_accuracy", "foundation/val_accuracy")):
        if first.get(key) is not None:
            out[tag] = first[key]
    return out


class TensorBoardWriter(Callback):
    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir) / "tensorboard"
        self.writer = None

    def on_run_start(self, start_round: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run replays the rounds after its checkpoint bit-identically, so values written
        # before an interruption are written again unchanged
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def on_round_end(self, report: RoundReport) -> None:
        if self.writer is None or report.row is None:
            return
        records = list(report.row["silos"].values())
        sim_ms = int(round(report.row["sim_time_ms"]))
        for tag, value in round_scalars(records).items():
            self.writer.add_scalar(f"round/{tag}", value, report.round)
            self.writer.add_scalar(f"sim_time_ms/{tag}", value, sim_ms)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
