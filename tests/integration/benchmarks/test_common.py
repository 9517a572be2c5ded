"""``benchmarks.common``'s record writer: the dated Markdown and JSON a benchmark run leaves, read
back and compared with what was printed and with git's own answer for the commit.

The checks that need no process: tests/benchmarks/test_common.py."""

from __future__ import annotations

import datetime
import json
import os
import subprocess

from rich.table import Table

from benchmarks.common import Record
from tests.harness import REPO


def test_record_writes_the_printed_tables_with_command_commit_machine_and_load(tmp_path):
    table = Table(title="speed [bold]now[/bold]")
    table.add_column("runner")
    table.add_column("s / round")
    table.add_row("plain", "[green]1.00[/green]")
    table.add_section()
    table.add_row("fedsim", "0.89")
    rec = Record("demo", str(REPO / "benchmarks" / "demo.py"), ["--rounds", "3"], directory=tmp_path / "demo",
                 variant="quick")
    rec.table(table)
    rec.note("[holds] ratio 0.89")
    drawn = []
    path = rec.write({"raw": [1.0, 0.89]}, figures={"fig.png": lambda p: (drawn.append(p), p.write_bytes(b"png"))})

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.strip()
    commit = head + ("+dirty" if dirty else "")
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    assert path == tmp_path / "demo" / f"{today}-{commit}-quick.md"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["command"] == "python benchmarks/demo.py --rounds 3"
    assert meta["commit"] == commit and meta["date"] == today and meta["study"] == "demo"
    assert meta["machine"]["cpus"] == os.cpu_count()
    assert len(meta["load_average"]["before"]) == 3 and len(meta["load_average"]["after"]) == 3
    assert meta["tables"] == [{"title": "speed now", "columns": ["runner", "s / round"],
                               "rows": [["plain", "1.00"], ["fedsim", "0.89"]]}]
    assert meta["data"] == {"raw": [1.0, 0.89]}
    md = path.read_text()
    assert "Command: `python benchmarks/demo.py --rounds 3`" in md and f"Commit {commit}" in md
    assert "**speed now**\n\n| runner | s / round |\n|---|---|\n| plain | 1.00 |\n| fedsim | 0.89 |" in md
    assert "[holds] ratio 0.89" in md  # a note is the printed line, not rich markup
    assert drawn == [tmp_path / "demo" / f"{today}-{commit}-quick-fig.png"]
    assert f"![fig.png]({today}-{commit}-quick-fig.png)" in md
