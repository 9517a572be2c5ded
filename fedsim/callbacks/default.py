"""The writers a run gets: :func:`default_callbacks`, the one list of them."""

from __future__ import annotations

from pathlib import Path

from fedsim.callbacks.base import Callback, CallbackList
from fedsim.callbacks.jsonl import MetricsWriter
from fedsim.callbacks.plot import PlotWriter
from fedsim.callbacks.progress import ProgressBar
from fedsim.callbacks.summary import SummaryWriter
from fedsim.callbacks.tensorboard import TensorBoardWriter
from fedsim.config import LogConfig


def default_callbacks(log: LogConfig, run_dir: str | Path, rank: int, silos: list[int], *, name: str,
                      label: str, rounds: int, task: str) -> CallbackList:
    """The writers of a run on ``rank``, from the ``log:`` section and what they write about:
    per-silo JSONL metrics of the rank's ``silos`` on every rank; progress bar (the run's
    ``name``, ``rounds``, ``task``), summary, plot (the run's ``label``) and
    (``log.tensorboard``) TensorBoard events on rank 0. Built by :func:`fedsim.trainer.build_callbacks`."""
    callbacks: list[Callback] = [MetricsWriter(run_dir, silos)]
    if rank == 0:
        callbacks += [ProgressBar(name, rounds, task), SummaryWriter(run_dir), PlotWriter(run_dir, label)]
        if log.tensorboard:
            callbacks.append(TensorBoardWriter(run_dir))
    return CallbackList(callbacks)
