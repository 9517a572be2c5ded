"""Outputs of a run, one writer per file, each a :class:`Callback` of the round loop.

Adding an output (a file, a dashboard) is one class in one file here, listed in
:func:`default_callbacks`; the loop itself does not change."""

from __future__ import annotations

from fedsim.callbacks.base import Callback, CallbackList, RoundReport

__all__ = ["Callback", "CallbackList", "RoundReport", "default_callbacks"]


def default_callbacks(plan, rank: int) -> CallbackList:
    """The writers of a run on ``rank``: per-silo JSONL metrics on every rank; progress bar,
    summary, plot and (``log.tensorboard``) TensorBoard events on rank 0."""
    from fedsim.callbacks.jsonl import MetricsWriter
    from fedsim.callbacks.plot import PlotWriter
    from fedsim.callbacks.progress import ProgressBar
    from fedsim.callbacks.summary import SummaryWriter

    callbacks: list[Callback] = [MetricsWriter(plan, rank)]
    if rank == 0:
        callbacks += [ProgressBar(plan), SummaryWriter(plan), PlotWriter(plan)]
        if plan.cfg.log.tensorboard:
            from fedsim.callbacks.tensorboard import TensorBoardWriter

            callbacks.append(TensorBoardWriter(plan))
    return CallbackList(callbacks)
