"""What the benchmark tables share beyond :mod:`fedsim.sweep` (which plans, runs and reuses the
runs and gives mean ± std), :mod:`fedsim.stats` (mean ± std, paired intervals) and
:mod:`fedsim.report` (cells, console and Markdown tables): ``--seeds`` for argparse, a cell shown
as "m ± s" in %, a cell's values for JSON, the summaries of a sweep keyed by (point, seed), the
simulated time to a target accuracy, and the dated result record every benchmark writes
(:class:`Record`).

**Records.** A benchmark's measurements are never copied into prose by hand: each run writes
``benchmarks/results/<study>/<date>-<commit>[-<variant>].md`` and ``.json`` — the command, the
commit (``+dirty`` when the tracked files differ from it), the machine, the load average before
and after, the wall time and the tables it printed, generated from its own output. The docs
page of the study shows its newest record (``docs/hooks.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from fedsim.report import markdown_table
from fedsim.report import pm as pm_cell
from fedsim.stats import mean_std

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def seeds_arg(text: str) -> list[int]:
    """argparse ``type=`` for ``--seeds``: :func:`fedsim.sweep.parse_seeds`, its error as a usage error."""
    from fedsim.errors import ConfigError
    from fedsim.sweep import parse_seeds

    try:
        return parse_seeds(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pm(values: Iterable[float | None]) -> str:
    """``"m ± s"`` in % of the values (sample std over seeds; "m" for one seed), "–" when there are none."""
    return pm_cell(*mean_std(list(values)), ".1f", scale=100.0)


def cell_stats(values: Iterable[float | None]) -> dict[str, Any]:
    """A cell for JSON: mean, sample std (None for one seed) and every seed's value."""
    m, sd = mean_std(list(values))
    return {"mean": m, "std": sd, "values": list(values)}


def sweep_runs(points: list[tuple[str, list[str]]], common: list[str], seeds: list[int], out: Path, nproc: int,
               log: Callable[[str], None], config: str | Path | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """Every (point, seed) through :mod:`fedsim.sweep` — ``config`` (default: the embedded
    default) with ``common`` and the point's overrides, in OUT/<point>/seed<s>/; a finished run
    folder with the same config is reused — → {(point, seed): summary}."""
    from fedsim.sweep import Point, execute, plan

    runs = plan(config, common, [Point(key, ov, key) for key, ov in points], seeds, out, nproc)
    log(f"{len(runs)} runs planned ({len(points)} points × seeds {','.join(map(str, seeds))}) under {out}")
    execute(runs, 1, log=log)
    return {(r.point.label, r.seed): json.loads((r.run_dir / "summary.json").read_text()) for r in runs}


def time_to_target(accuracy: list[float | None], sim_ms: list[float], target: float) -> float | None:
    """Simulated seconds at the end of the first round whose accuracy reaches ``target`` (None: never)."""
    for acc, t in zip(accuracy, sim_ms):
        if acc is not None and acc >= target:
            return t / 1e3
    return None


# ---------------------------------------------------------------------------------------------
# dated result records


def commit() -> str:
    """The checkout's short commit, ``+dirty`` when tracked files differ from it ("unknown" outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPUs, processor, OS, Python and torch versions."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch_version = torch.__version__
    else:  # importing torch only to name its version would cost seconds
        from importlib import metadata

        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            torch_version = None
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch_version}


def _plain(cell: Any) -> str:
    """A rich table cell or title as the console shows its text (markup removed)."""
    from rich.text import Text

    if isinstance(cell, Text):
        return cell.plain
    try:
        return Text.from_markup(str(cell)).plain
    except Exception:  # noqa: BLE001 - a string that is not valid markup is shown as it is
        return str(cell)


def table_data(table: Any) -> dict[str, Any]:
    """A rich ``Table`` as {title, columns, rows} of plain strings (what the console printed)."""
    columns = [_plain(c.header) for c in table.columns]
    cells = [[_plain(v) for v in c.cells] for c in table.columns]
    rows = [list(r) for r in zip(*cells)] if cells else []
    return {"title": _plain(table.title) if table.title else "", "columns": columns, "rows": rows}


def add_record_args(parser: argparse.ArgumentParser, study: str) -> None:
    """``--record DIR`` (default benchmarks/results/STUDY) and ``--no-record`` for a benchmark's parser."""
    parser.add_argument("--record", type=Path, default=RESULTS / study, metavar="DIR",
                        help=f"where the dated result record goes (default benchmarks/results/{study})")
    parser.add_argument("--no-record", action="store_true", help="print the tables only, write no record")


class Record:
    """One benchmark run's dated result record, collected while the script runs.

    Create it when the measurement starts (it reads the load average and the clock then), add
    every table the script prints (:meth:`table`) and the lines that say what they mean
    (:meth:`note`), then :meth:`write` it: ``<date>-<commit>[-<variant>].md`` and ``.json`` under
    ``directory`` (``None``: nothing is written, for ``--no-record``).
    """

    def __init__(self, study: str, script: str, argv: Sequence[str] | None = None, *,
                 directory: Path | None = None, variant: str = "") -> None:
        self.study, self.variant, self.directory = study, variant, directory
        args = list(sys.argv[1:] if argv is None else argv)
        self.command = " ".join(["python", _relative(Path(script)), *args])
        self.load_before = list(os.getloadavg())
        self.started = time.perf_counter()
        self.items: list[dict[str, Any]] = []

    @classmethod
    def from_args(cls, args: argparse.Namespace, study: str, script: str, argv: Sequence[str] | None = None,
                  variant: str = "") -> Record:
        """From the options of :func:`add_record_args`."""
        return cls(study, script, argv, directory=None if args.no_record else Path(args.record), variant=variant)

    def table(self, table: Any = None, *, title: str = "", columns: Sequence[str] = (),
              rows: Sequence[Sequence[Any]] = ()) -> None:
        """A printed table: a rich ``Table``, or its title, columns and rows."""
        if table is not None:
            self.items.append({"kind": "table", **table_data(table)})
        else:
            self.items.append({"kind": "table", "title": _plain(title), "columns": [_plain(c) for c in columns],
                               "rows": [[_plain(c) for c in r] for r in rows]})

    def note(self, text: str, *, markup: bool = False) -> None:
        """A line of what the run printed beside its tables (a ratio, a check, a target);
        ``markup``: the line is rich markup (as given to ``console.print``), kept as its text."""
        self.items.append({"kind": "note", "text": _plain(text) if markup else text})

    def markdown(self) -> str:
        """The items as Markdown: each table under its title in bold, notes as paragraphs."""
        parts = []
        for item in self.items:
            if item["kind"] == "table":
                if item["title"]:
                    parts.append(f"**{item['title']}**")
                parts.append(markdown_table(item["columns"], item["rows"]))
            else:
                parts.append(item["text"])
        return "\n\n".join(parts)

    def write(self, data: Any = None, *, title: str | None = None, body: str | None = None,
              figures: dict[str, Callable[[Path], Any]] | None = None) -> Path | None:
        """Write the record (``body``: Markdown instead of the collected items; ``figures``: file
        name → a function that draws it there, linked from the Markdown) → the .md path."""
        if self.directory is None:
            return None
        return write_record(self.directory, study=self.study, title=title,
                            command=self.command, body=self.markdown() if body is None else body,
                            tables=[i for i in self.items if i["kind"] == "table"], data=data,
                            variant=self.variant, load_before=self.load_before,
                            wall_s=time.perf_counter() - self.started, figures=figures)


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def write_record(directory: Path, *, study: str, title: str | None, command: str, body: str,
                 tables: list[dict[str, Any]] | None = None, data: Any = None, variant: str = "",
                 load_before: Sequence[float] | None = None, wall_s: float | None = None,
                 figures: dict[str, Callable[[Path], Any]] | None = None) -> Path:
    """The one writer of result records: ``<date>-<commit>[-<variant>].md`` and ``.json`` in
    ``directory`` (created), headed by the command, commit, machine, load average and wall time;
    each figure is drawn to ``<stem>-<name>`` beside them and linked; ``title`` defaults to the
    study, date and commit. → the .md path."""
    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {"study": study, "command": command, "commit": commit(), "date": now.date().isoformat(),
            "time": now.isoformat(timespec="seconds"), "machine": machine(),
            "load_average": {"before": list(load_before) if load_before is not None else None,
                             "after": list(os.getloadavg())},
            "wall_s": wall_s}
    stem = "-".join(x for x in (meta["date"], meta["commit"], variant) if x)
    directory.mkdir(parents=True, exist_ok=True)
    m, load = meta["machine"], meta["load_average"]
    load_text = ", ".join(f"{k} {v[0]:.2f}" for k, v in load.items() if v is not None)
    title = f"{title or study} ({meta['date']}, {meta['commit']})"
    head = [f"# {title}", "", f"Command: `{command}`", "",
            f"Commit {meta['commit']} · {meta['time']} · {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, "
            f"torch {m['torch']} · load average {load_text}"
            + (f" · {wall_s / 60:.1f} min" if wall_s is not None else ""), ""]
    links = []
    for name, draw in (figures or {}).items():
        draw(directory / f"{stem}-{name}")
        links.append(f"![{name}]({stem}-{name})")
    (directory / f"{stem}.md").write_text("\n".join([*head, body, *([""] + links if links else []), ""]))
    payload = {**meta, "tables": [{k: v for k, v in t.items() if k != "kind"} for t in tables or []], "data": data}
    (directory / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return directory / f"{stem}.md"
