"""How results are shown: a cell ("m ± s"), a table for the console and the same table in
Markdown — one formatter each, for the CLI, the sweeps and every benchmark record.

A table is a title, column headers and rows of cells (strings; ``None`` is an empty cell). The
console form is a rich ``Table`` (first column left-aligned, the others right-aligned, unless
``justify`` says otherwise; a :data:`SECTION` row draws a rule between groups of rows); the
Markdown form is a GitHub-flavoured table. The statistics behind the cells: :mod:`fedsim.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from fedsim.ui import console as default_console

#: a row of :func:`console_table` that draws a rule between groups of rows (left out in Markdown)
SECTION: tuple = ()


def missing(value: Any) -> bool:
    """Whether a value is absent: None or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def pm(mean: float | None, std: float | None, spec: str = ".3f", *, scale: float = 1.0, sign: str = "",
       empty: str = "–") -> str:
    """``"m ± s"`` — each ``scale``-d and formatted with ``spec`` (``sign="+"``: the mean signed);
    just ``"m"`` without a std (one seed: :mod:`fedsim.stats`), ``empty`` without a mean."""
    if missing(mean):
        return empty
    text = format(scale * mean, sign + spec)
    return text if missing(std) else f"{text} ± {format(scale * std, spec)}"


def num(value: float | None, spec: str = ".3f", *, scale: float = 1.0, empty: str = "–") -> str:
    """One number formatted with ``spec`` (``empty`` when it is None or NaN)."""
    return empty if missing(value) else format(scale * value, spec)


def markdown_table(columns: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` inside a cell is escaped, a line break becomes a
    space, a missing cell is empty, :data:`SECTION` rows are left out."""
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows if len(row)]
    return "\n".join(lines)


def console_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None,
                  caption: str | None = None, justify: Sequence[str] | None = None, no_wrap: bool = False) -> Table:
    """A rich ``Table`` to print: ``justify`` per column (default: the first left, the others
    right), ``no_wrap`` keeps every cell on one line; a :data:`SECTION` row draws a rule."""
    table = Table(title=title, caption=caption)
    for i, col in enumerate(columns):
        table.add_column(col, justify=justify[i] if justify else ("left" if i == 0 else "right"),  # type: ignore[arg-type]
                         no_wrap=no_wrap)
    for row in rows:
        if not len(row):
            table.add_section()
        else:
            table.add_row(*["" if c is None else c for c in row])
    return table


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None,
                caption: str | None = None, justify: Sequence[str] | None = None, no_wrap: bool = False,
                console: Console | None = None) -> Table:
    """Print :func:`console_table` on ``console`` (default :func:`fedsim.ui.console`); → the table."""
    table = console_table(columns, rows, title=title, caption=caption, justify=justify, no_wrap=no_wrap)
    (console or default_console()).print(table)
    return table
