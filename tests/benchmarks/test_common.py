"""``benchmarks.common``: the Markdown table escapes pipes, and without a record nothing is written."""

from __future__ import annotations

from benchmarks.common import Record, add_record_args, markdown_table
from tests.harness import REPO


def test_markdown_table_escapes_pipes():
    got = markdown_table(["a", "b|c"], [["1", "x | y"], ["2", None]])
    assert got == "| a | b\\|c |\n|---|---|\n| 1 | x \\| y |\n| 2 |  |"


def test_no_record_writes_nothing(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_record_args(parser, "demo")
    args = parser.parse_args(["--no-record", "--record", str(tmp_path / "x")])
    rec = Record.from_args(args, "demo", "benchmarks/demo.py", [])
    rec.note("nothing")
    assert rec.write() is None
    assert not (tmp_path / "x").exists()
    default = parser.parse_args([])
    assert default.record == REPO / "benchmarks" / "results" / "demo" and not default.no_record
