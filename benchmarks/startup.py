"""Start-up benchmark: how much of a small job's wall time is spent outside its rounds.

Runs the 4-silo, 5-round FedAvg job (``python -m fedsim run``, no baselines, no downstream) as a
user would, and splits its wall time into the rounds (from the first round's start to the last
round's record, ``wall_time_s`` in the metrics) and everything else (interpreter, imports,
spawning ranks, data, final Θ, summary, plot, exit). ``--compare DIR`` runs the same job with
another checkout of fedsim (e.g. the main branch) in the same session, alternating, so the ratio
is measured under the same load; the floor row is a bare ``python -c "import torch"``, timed right
after each job, and the last line is what the job spends outside its rounds beyond that floor
(target: at most 1.5 s).

    python benchmarks/startup.py [--repeat 2] [--compare /path/to/other/checkout] [--out runs/bench_startup]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere: benchmarks.common and fedsim
TARGET_S = 1.5  # the target: seconds outside the rounds beyond a bare import torch
JOB = ["algorithm=fedavg", "rounds=5", "compare_with=[]", "downstream.enabled=false"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=2, help="runs per checkout (default 2; the median is shown)")
    p.add_argument("--compare", default=None, metavar="DIR", help="another fedsim checkout to run the same job with")
    p.add_argument("--out", default="runs/bench_startup", help="output folder (default runs/bench_startup)")
    from benchmarks.common import add_record_args

    add_record_args(p, "startup")
    return p.parse_args(argv)


def run_job(checkout: Path, out: Path, name: str) -> dict[str, float]:
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [a for kv in [*JOB, f"output_dir={out}", f"name={name}"] for a in ("--set", kv)]
    env = dict(os.environ, PYTHONPATH=str(checkout), PYTHONDONTWRITEBYTECODE="1")  # leave the other checkout as it is
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fedsim", "run", "--quiet", *sets], cwd=checkout, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: the job failed:\n{done.stderr[-2000:]}")
    last = json.loads((run_dir / "metrics" / "silo_0.jsonl").read_text().splitlines()[-1])
    setup = json.loads((run_dir / "summary.json").read_text()).get("setup_s", float("nan"))
    return {"wall": wall, "rounds": last["wall_time_s"], "setup": setup}


def import_floor() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    from benchmarks.common import Record
    from fedsim.report import console_table

    rec = Record.from_args(args, "startup", __file__, argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkouts = {"this": REPO}
    if args.compare:
        checkouts["compare"] = Path(args.compare).resolve()
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in checkouts}
    floors = []
    for r in range(args.repeat):  # alternate, so both see the same load
        for key, path in checkouts.items():
            runs[key].append(run_job(path, out, f"{key}-{r}"))
        floors.append(import_floor())
    cells = []
    rows = {}
    for key, path in checkouts.items():
        wall = statistics.median(r["wall"] for r in runs[key])
        rounds = statistics.median(r["rounds"] for r in runs[key])
        setup = statistics.median(r["setup"] for r in runs[key])
        rows[key] = {"wall": wall, "rounds": rounds, "outside": wall - rounds}
        cells.append([f"{key} ({path})", f"{wall:.1f}", f"{rounds:.1f}", f"{wall - rounds:.1f}",
                      f"{(wall - rounds) / wall:.0%}", "-" if setup != setup else f"{setup:.1f}"])
    floor = statistics.median(floors)
    cells.append(["python -c 'import torch' alone", f"{floor:.1f}", "", f"{floor:.1f}",
                  f"{floor / rows['this']['wall']:.0%} of this"])
    table = console_table(["checkout", "wall s", "rounds s", "outside rounds s", "outside share",
                           "of which data + silos s"], cells, justify=["right"] * 6,
                          title=f"4 silos, 5 rounds of FedAvg on 2 ranks (median of {args.repeat})")
    Console(width=150).print(table)
    rec.table(table)
    lines = [f"outside the rounds beyond a bare import torch: this {rows['this']['outside'] - floor:.2f} s"
             + (f", compare {rows['compare']['outside'] - floor:.2f} s" if "compare" in rows else "")
             + f" (target <= {TARGET_S:g} s: {'met' if rows['this']['outside'] - floor <= TARGET_S else 'MISSED'})"]
    if "compare" in rows:
        lines.append(f"outside the rounds: this / compare = {rows['this']['outside'] / rows['compare']['outside']:.2f}")
    for line in lines:
        print(line)
        rec.note(line)
    (out / "startup.json").write_text(json.dumps({"runs": runs, "import_floor_s": floors}, indent=1))
    rec.write({"runs": runs, "import_floor_s": floors})
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
