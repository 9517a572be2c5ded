"""``fedsim plot RUN_DIR ...``: accuracy per round and vs simulated time, one curve per run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot accuracy vs round and vs simulated time of one or more runs",
                       description="Mean silo accuracy (solid) and foundation Θ accuracy (dashed) per "
                                   "round and against simulated network time, one colour per run.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (runs/<name>)")
    p.add_argument("-o", "--out", default="accuracy.png", help="output PNG (default: accuracy.png)")
    p.add_argument("--label", action="append", help="legend label per run (in order)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from fedsim.errors import ConfigError
    from fedsim.plots import plot_runs

    if args.label and len(args.label) != len(args.runs):
        raise ConfigError(f"--label given {len(args.label)} times for {len(args.runs)} runs")
    out = plot_runs(args.runs, args.out, args.label)
    print(f"wrote {out}")
    return 0
