"""``fedsim.report``: the cell, the console table and the Markdown table every table is made of."""

from __future__ import annotations

import io

from rich.console import Console

from fedsim.report import SECTION, console_table, markdown_table, num, pm


def test_a_cell_is_mean_plus_minus_std_or_the_mean_alone_or_a_dash():
    assert pm(0.5, 0.25) == "0.500 ± 0.250"
    assert pm(0.1234, 0.0456, ".1f", scale=100.0, sign="+") == "+12.3 ± 4.6"
    assert pm(-0.02, 0.01, ".2f", sign="+") == "-0.02 ± 0.01"
    assert pm(0.5, None) == pm(0.5, float("nan")) == "0.500"  # one seed: no std
    assert pm(None, 0.1) == pm(float("nan"), 0.1) == "–"
    assert pm(None, None, empty="") == ""
    assert num(2.5, ".2f") == "2.50" and num(None) == "–" and num(0.5, ".0f", scale=100.0) == "50"


def test_markdown_table_escapes_pipes_and_leaves_sections_out():
    got = markdown_table(["a", "b|c"], [["1", "x | y"], SECTION, ["2", None], ["3", "two\nlines"]])
    assert got.splitlines() == ["| a | b\\|c |", "|---|---|", "| 1 | x \\| y |", "| 2 |  |", "| 3 | two lines |"]


def test_console_table_aligns_the_first_column_left_and_draws_sections():
    table = console_table(["name", "value"], [["a", "1"], SECTION, ["long name", "22"]], title="T")
    out = io.StringIO()
    Console(file=out, width=60).print(table)
    lines = out.getvalue().splitlines()
    assert lines[0].strip() == "T"
    row_a = next(line for line in lines if "│ a" in line)
    assert row_a.split("│")[1] == " a         " and row_a.split("│")[2] == "     1 "  # left, right
    assert sum(line.startswith("├") for line in lines) == 1  # the rule of the section
    assert [c.justify for c in console_table(["x", "y"], [], justify=["right", "center"]).columns] == ["right", "center"]
