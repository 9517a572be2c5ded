"""``fedsim sweep``: one experiment over a grid of settings and several seeds, as mean ± std."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Run CONFIG (default: the embedded default) for every point of a grid and every seed, then print
and save mean ± std (sample std over the seeds) per point: Θ test accuracy, Θ validation
accuracy (with data.validation_fraction), mean silo accuracy, gradient steps and MB per round,
wall time, and downstream Dice / mIoU / Jaccard / tube accuracy when the downstream stage is
enabled. Every run is an ordinary run folder OUT/<point>/seed<s>/; a finished run with the same
config is reused, an interrupted one continues from its checkpoint, a folder holding another
config is never overwritten. Writes OUT/sweep.json, sweep.csv and sweep.png (Θ accuracy by round,
mean ± std band).

  fedsim sweep --set-grid fedefm.mix=hosted,experts,gossip --seeds 0,1,2 --set downstream.enabled=false
  fedsim sweep CONFIG --set-grid fedefm.beta=0,0.2,0.5 --set-grid fedefm.temperature=1,3 --parallel 2"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of settings over several seeds; mean ± std table",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="experiment YAML (default: the embedded default)")
    p.add_argument("--set-grid", dest="grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a grid axis; repeat for a product (values parsed as YAML; commas inside [] stay)")
    p.add_argument("--seeds", default="0,1,2", help="experiment seeds, comma-separated (default 0,1,2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every run")
    p.add_argument("--nproc", type=int, default=None, help="ranks per run (default as fedsim run)")
    p.add_argument("--parallel", type=int, default=1, metavar="K", help="process groups running at once (default 1)")
    p.add_argument("--out", default=None, help="sweep folder (default OUTPUT_DIR/sweep-NAME)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from fedsim.errors import ConfigError
    from fedsim.experiment import check_output_dir, resolve_config
    from fedsim.sweep import collect, execute, grid_points, parse_seeds, plan, write_outputs

    if args.parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {args.parallel}")
    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    seeds = parse_seeds(args.seeds)
    points = grid_points(args.grid)
    base, _ = resolve_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path(base.output_dir) / f"sweep-{base.name}"
    check_output_dir(str(out))
    runs = plan(args.config, args.overrides, points, seeds, out, args.nproc)
    execute(runs, args.parallel, log=(lambda _m: None) if args.quiet else print)
    rows = collect(runs)
    title = f"{base.name}: {len(points)} point(s) × {len(seeds)} seed(s), mean ± std"
    write_outputs(rows, out, title)
    print_rows(rows, title)
    print(f"results in {out}/ (sweep.json, sweep.csv, sweep.png)")
    return 0


def print_rows(rows, title: str) -> None:
    """The sweep's table: one row per (point, model), each metric as mean ± std over the seeds."""
    from fedsim.report import pm, print_table
    from fedsim.sweep import DOWNSTREAM_METRICS, SUMMARY_METRICS, columns

    cols = columns(rows)
    titles = {**SUMMARY_METRICS, **DOWNSTREAM_METRICS}
    table = []
    for row in rows:
        cells = []
        for key in cols:
            spec = ".1f" if key in ("wall_time_s", "grad_steps_per_round") else ".2f" if key == "mb_per_round" else ".3f"
            cells.append(pm(row["mean"].get(key), row["std"].get(key), spec))
        table.append([row["point"], row["label"], str(len(row["seeds"])), *cells])
    print_table(["point", "model", "seeds", *(titles[k] for k in cols)], table, title=title,
                justify=["left", "left", "right", *("right" for _ in cols)])
