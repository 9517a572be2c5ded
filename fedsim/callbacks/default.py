"""The writers a run gets: :func:`default_callbacks`, the one list of them."""

from __future__ import annotations

from fedsim.callbacks.base import Callback, CallbackList
from fedsim.callbacks.jsonl import MetricsWriter
from fedsim.callbacks.plot import PlotWriter
from fedsim.callbacks.progress import ProgressBar
from fedsim.callbacks.summary import SummaryWriter
from fedsim.callbacks.tensorboard import TensorBoardWriter


def default_callbacks(plan, rank: int) -> CallbackList:
    """The writers of a run on ``rank``: per-silo JSONL metrics on every rank; progress bar,
    summary, plot and (``log.tensorboard``) TensorBoard events on rank 0."""
    callbacks: list[Callback] = [MetricsWriter(plan, rank)]
    if rank == 0:
        callbacks += [ProgressBar(plan), SummaryWriter(plan), PlotWriter(plan)]
        if plan.cfg.log.tensorboard:
            callbacks.append(TensorBoardWriter(plan))
    return CallbackList(callbacks)
