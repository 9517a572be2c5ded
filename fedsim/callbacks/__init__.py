"""Outputs of a run, one writer per file, each a :class:`Callback` of the round loop.

Adding an output (a file, a dashboard) is one class in one file here, listed in
:func:`fedsim.callbacks.default.default_callbacks`; the loop itself does not change. This module
only names the seam: importing one writer (or the JSONL reader) does not import the others."""

from __future__ import annotations

from fedsim.callbacks.base import Callback, CallbackList, RoundReport

__all__ = ["Callback", "CallbackList", "RoundReport"]
