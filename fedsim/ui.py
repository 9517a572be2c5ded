"""Terminal output shared by commands and benchmarks."""

from __future__ import annotations

from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A rich console; when output is not a terminal (a log, CI, a pipe) tables get 140
    columns instead of rich's 80 so they are not wrapped."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=140)
