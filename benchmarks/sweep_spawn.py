"""Sweep benchmark: a sweep's runs share one start of the ranks per process group.

Times the same tiny runs two ways, as a user would launch them: one ``fedsim sweep`` (every run
of a process group in one spawn of the ranks, ``--parallel 1``) and one ``fedsim run`` per run,
one after another. Prints both walls and their ratio (a sweep's wall / the runs one by one); each
run folder of both ways must hold the same Θ and Θ accuracy (the sharing changes nothing but the
time: Θ bit for bit). ``--repeat`` alternates the two ways, so both see the same load.

    python benchmarks/sweep_spawn.py [--runs 12] [--repeat 1] [--out runs/bench_sweep_spawn]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere: benchmarks.common and fedsim
#: a tiny job: what a sweep of many short runs pays is mostly start-up
TINY = ["algorithm=fedavg", "rounds=2", "compare_with=[]", "downstream.enabled=false", "data.image_size=16",
        "data.samples_per_silo=32", "data.test_samples=64", "model.width=4", "train.local_steps=1",
        "train.batch_size=16"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=12, help="runs (seeds 0..N-1; default 12)")
    p.add_argument("--repeat", type=int, default=1, help="times each way is timed (default 1; the median is shown)")
    p.add_argument("--out", default="runs/bench_sweep_spawn", help="output folder (default runs/bench_sweep_spawn)")
    from benchmarks.common import add_record_args

    add_record_args(p, "sweep_spawn")
    args = p.parse_args(argv)
    if args.runs < 1 or args.repeat < 1:
        p.error("--runs and --repeat must be >= 1")
    return args


def fedsim(*argv: str) -> float:
    """Wall seconds of ``python -m fedsim ARGV`` (exit on failure with its stderr)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fedsim", *argv, "--quiet"], cwd=REPO, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"fedsim {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def same_run(a: Path, b: Path) -> bool:
    """Both run folders hold the same Θ, bit for bit, and the same Θ accuracy."""
    import torch

    def theta(run_dir: Path) -> dict:
        return torch.load(run_dir / "foundation.pt", map_location="cpu", weights_only=True)

    def accuracy(run_dir: Path) -> float:
        return json.loads((run_dir / "summary.json").read_text())["foundation_accuracy"]

    ta, tb = theta(a), theta(b)
    return (ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
            and accuracy(a) == accuracy(b))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    from benchmarks.common import Record
    from fedsim.report import console_table

    rec = Record.from_args(args, "sweep_spawn", __file__, argv)
    out = Path(args.out).resolve()
    seeds = list(range(args.runs))
    sets = [a for kv in TINY for a in ("--set", kv)]
    walls: dict[str, list[float]] = {"sweep": [], "one by one": []}
    for r in range(args.repeat):
        shutil.rmtree(out, ignore_errors=True)
        sweep_dir, alone_dir = out / f"sweep-{r}", out / f"alone-{r}"
        walls["sweep"].append(fedsim("sweep", *sets, "--seeds", ",".join(map(str, seeds)), "--parallel", "1",
                                     "--out", str(sweep_dir)))
        walls["one by one"].append(sum(fedsim("run", *sets, "--set", f"seed={s}", "--set", f"output_dir={alone_dir}",
                                              "--set", f"name=seed{s}") for s in seeds))
        for s in seeds:  # the sharing changes the time only
            if not same_run(next(sweep_dir.glob(f"*/seed{s}")), alone_dir / f"seed{s}"):
                raise SystemExit(f"seed {s}: the sweep's Θ differs from the run alone")
    wall = {k: statistics.median(v) for k, v in walls.items()}
    ratio = wall["sweep"] / wall["one by one"]
    table = console_table(["way", "wall s", "s per run"],
                          [[k, f"{v:.1f}", f"{v / args.runs:.2f}"] for k, v in wall.items()],
                          justify=["left", "right", "right"],
                          title=f"{args.runs} tiny FedAvg runs (2 rounds, 4 silos), median of {args.repeat}")
    Console(width=120).print(table)
    rec.table(table)
    line = (f"a sweep / the same runs one by one: {ratio:.2f}x "
            f"(Θ bit-identical in every run; the sweep shares one spawn of the ranks per process group)")
    print(line)
    rec.note(line)
    rec.write({"walls": walls, "runs": args.runs, "ratio": ratio})
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
