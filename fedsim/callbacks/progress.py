"""A rich progress bar on rank 0: round, training loss, accuracy (or Dice), Θ, MB sent in the round."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsim.callbacks.base import Callback, RoundReport


class ProgressBar(Callback):
    def __init__(self, name: str, rounds: int, task: str) -> None:
        """The run's ``name``, its ``rounds`` and its ``task`` (segmentation shows Dice)."""
        self.rounds = rounds
        self.name = name
        self.metric = "dice" if task == "segmentation" else "acc"
        self.bar = None

    def on_run_start(self, start_round: int) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), transient=False,
        )
        self.task = self.bar.add_task(self.name, total=self.rounds, completed=start_round, stats="")
        self.bar.start()

    def on_round_end(self, report: RoundReport) -> None:
        row = report.row
        if self.bar is None or row is None:
            return
        acc = f"{self.metric} {row['accuracy']:.3f}" if row["accuracy"] is not None else ""
        if row.get("foundation_accuracy") is not None:
            acc += f"  Θ {row['foundation_accuracy']:.3f}"
        loss = f"loss {row['loss']:.3f}" if row["loss"] is not None else ""
        self.bar.update(self.task, advance=1, stats=f"{loss}  {acc}  {row['bytes'] / 1e6:.2f} MB this round")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
