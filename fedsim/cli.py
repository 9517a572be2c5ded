"""``fedsim`` command line: run experiments, inspect topologies and data.

Every error a user can cause is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from fedsim.commands import config as config_cmd
from fedsim.commands import data as data_cmd
from fedsim.commands import downstream as downstream_cmd
from fedsim.commands import list as list_cmd
from fedsim.commands import plot as plot_cmd
from fedsim.commands import run as run_cmd
from fedsim.commands import sweep as sweep_cmd
from fedsim.commands import topology as topology_cmd
from fedsim.errors import FedsimError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsim",
        description="Decentralized cross-silo federated learning simulator on torch.distributed.",
        epilog="Run `fedsim COMMAND --help` for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run_cmd.register(sub)
    sweep_cmd.register(sub)
    topology_cmd.register(sub)
    data_cmd.register(sub)
    downstream_cmd.register(sub)
    plot_cmd.register(sub)
    config_cmd.register(sub)
    list_cmd.register(sub)
    return parser


def run_script(entry) -> None:
    """Run a benchmark's ``main()`` with the CLI's contract: a FedsimError is one line, exit 2."""
    try:
        code = entry()
    except FedsimError as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except FedsimError as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsim: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``fedsim`` command (and ``python -m fedsim``): :func:`main`, then exit at once.

    Tearing the interpreter down after a run (finalising torch, TorchDynamo, matplotlib and
    thousands of objects) took 6-12 s of a 75 s job on a busy 2-core machine, more than the
    whole final evaluation and writing. Everything a run writes is closed by then (callbacks,
    summary, plots; the ranks have exited), so only the standard streams need flushing."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
