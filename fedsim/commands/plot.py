"""``fedsim plot RUN_DIR ...``: accuracy per round and vs simulated time, one curve per run;
``--weights``: FedEFM's teacher weights and similarities per silo and round."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot accuracy vs round and vs simulated time of one or more runs "
                                    "(--weights: FedEFM's teacher weights of one run)",
                       description="Mean silo accuracy (solid) and foundation Θ accuracy (dashed) per "
                                   "round and against simulated network time, one colour per run. "
                                   "With --weights: for each silo of one FedEFM run, the weight w_ij "
                                   "(above) and EMD similarity s_ij (below) of each teacher j per round, "
                                   "read from its metrics/silo_*.jsonl (exit 2 for a run without them).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (runs/<name>)")
    p.add_argument("-o", "--out", default=None,
                   help="output PNG (default: accuracy.png; teacher_weights.png with --weights)")
    p.add_argument("--label", action="append", help="legend label per run (in order)")
    p.add_argument("--weights", action="store_true",
                   help="plot the teacher weights w_ij and EMD similarities of one FedEFM run instead")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from fedsim.errors import ConfigError
    from fedsim.plots import plot_runs, plot_teacher_weights

    if args.weights:
        if len(args.runs) != 1 or args.label:
            raise ConfigError("--weights plots one run: give a single RUN_DIR and no --label")
        out = plot_teacher_weights(args.runs[0], args.out or "teacher_weights.png")
    else:
        if args.label and len(args.label) != len(args.runs):
            raise ConfigError(f"--label given {len(args.label)} times for {len(args.runs)} runs")
        out = plot_runs(args.runs, args.out or "accuracy.png", args.label)
    print(f"wrote {out}")
    return 0
