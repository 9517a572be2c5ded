"""The same FedAvg job through fedsim, Flower's simulation engine and a plain loop: one table.

The job (``benchmarks/peer_job.py``): 4 clients × 512 RGB images 64², a small CNN, SGD (lr 0.1,
no momentum), 16 local steps of 32 per round, 5 rounds, uniform averaging, seed 0; the final
global model scored on 512 test images. fedsim runs it as a *plug-in* (``model.name:
peer_job:make_net``, ``data.kind: python``, ``data.factory: peer_job:load``) on 2 ranks and on 1
rank; Flower (``flwr[simulation]``, Ray backend, one CPU per client actor, two CPUs) runs its stock
message-API FedAvg with a ClientApp doing the same local steps on the same mini-batches; the plain
loop runs the silos one after another in one process.

Measured from outside for each runner, in a single run of the whole command (interpreter start
to exit): wall time, time per round (after set-up: the rounds and the final evaluation, divided
by the rounds), peak memory of the whole process tree — every descendant, Ray's daemons and
workers included — as the sum of RSS and as the sum of PSS (shared pages split between the
processes that map them), the most processes alive at once, and the final accuracy. Ratios:
fedsim (2 ranks) / Flower for wall time and peak Σ PSS (targets: ≤ 0.5 and ≤ 0.4),
fedsim (1 rank) / plain loop per round (≤ 1.1). With ``--repeats N`` the runners take turns N
times; every figure is still one run's (the median run of the N), the ratios are also given
pair by pair (repeat i of fedsim against repeat i of Flower, under the same load), and the
best of N is an extra column only.

Flower lives in its own venv (never in requirements.txt): ``--flower-python`` (default
/work/venv_flower/bin/python), created when missing with

    python -m venv /work/venv_flower
    /work/venv_flower/bin/pip install torch==2.14.1 torchvision==0.29.1 -r benchmarks/requirements-peers.txt

(torch and torchvision pinned to the versions of fedsim's own environment: pip never resolves
another torch.)

    python benchmarks/peer_flower.py [--repeats 3] [--only fedsim2,flower] [--flower-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from peer_job import JOB  # noqa: E402

from benchmarks.common import Record, add_record_args  # noqa: E402

DEFAULT_FLOWER = Path("/work/venv_flower/bin/python")
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]  # fedsim's own: the same kernels on both sides
RUNNERS = ("plain", "fedsim1", "fedsim2", "flower")


# ---- process-tree memory from /proc (no psutil in fedsim's own environment) ----------------------

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces and parentheses
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int) -> list[int]:
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _kib(path: str, key: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


class TreeMemory:
    """Samples the process tree under ``pid`` every ``period`` s: peak Σ RSS, peak Σ PSS, the
    most processes at once and every process name seen."""

    def __init__(self, pid: int, period: float = 0.1) -> None:
        self.pid, self.period = pid, period
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids)
            pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.names.update(_name(p) for p in pids)
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> dict:
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
        mem = TreeMemory(proc.pid)
        code = proc.wait()
    wall = time.perf_counter() - started
    mem.stop()
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {code}); see {log}")
    return {"wall_s": wall, "rss_mb": mem.peak_rss / 1024, "pss_mb": mem.peak_pss / 1024, "procs": mem.peak_procs,
            "names": sorted(mem.names)}


# ---- the runners ----------------------------------------------------------------------------------

FEDSIM_CONFIG = f"""\
# the peer_job FedAvg job as a fedsim experiment: model and data are plug-ins (benchmarks/ on PYTHONPATH)
name: peer-job
algorithm: fedavg
topology: ring-4
rounds: {JOB["rounds"]}
seed: {JOB["seed"]}
train: {{optimizer: sgd, lr: {JOB["lr"]}, momentum: 0.0, batch_size: {JOB["batch_size"]},
        local_steps: {JOB["local_steps"]}, eval_every: 0}}
model: {{name: "peer_job:make_net", args: {{width: {JOB["width"]}}}}}
data:
  kind: python
  factory: "peer_job:load"
  args: {{n: {JOB["samples"]}, size: {JOB["size"]}, classes: {JOB["classes"]}, test: {JOB["test"]}}}
"""


def run_fedsim(nproc: int, work: Path, env: dict[str, str]) -> dict:
    cfg = work / "peer_job.yaml"
    cfg.write_text(FEDSIM_CONFIG)
    out = work / f"fedsim{nproc}"
    shutil.rmtree(out, ignore_errors=True)  # a kept folder from an earlier run would make it peer-job-2
    cmd = [sys.executable, "-m", "fedsim", "run", str(cfg), "--nproc", str(nproc), "--quiet",
           "--set", f"output_dir={out}"]
    res = measure(cmd, env, work, work / f"fedsim{nproc}.log")
    summary = json.loads((out / "peer-job" / "summary.json").read_text())
    res.update(accuracy=summary["foundation_accuracy"], per_round_s=summary["wall_time_s"] / JOB["rounds"],
               state=out / "peer-job" / "foundation.pt")
    return res


def run_peer(which: str, python: str, work: Path, env: dict[str, str]) -> dict:
    dest = work / f"{which}.json"
    res = measure([python, str(HERE / "peer_job.py"), which, str(dest)], env, work, work / f"{which}.log")
    res.update(json.loads(dest.read_text()), state=dest.with_suffix(".pt"))
    return res


def ensure_flower(python: Path) -> str:
    if python.is_file():
        return str(python)
    if python != DEFAULT_FLOWER:
        raise SystemExit(f"--flower-python {python}: not found")
    venv = python.parent.parent
    print(f"creating the Flower venv in {venv} (benchmarks/requirements-peers.txt) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *TORCH_PINS, "-r", str(HERE / "requirements-peers.txt")],
                   check=True)
    return str(python)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flower-python", type=Path, default=DEFAULT_FLOWER,
                   help="python of the venv with flwr[simulation] (default /work/venv_flower/bin/python)")
    p.add_argument("--only", default=",".join(RUNNERS), help=f"comma-separated subset of {','.join(RUNNERS)}")
    p.add_argument("--keep", type=Path, default=None, help="keep logs and results in this folder")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every runner this many times, interleaved; the figures are the median run's, the "
                        "ratios also pair by pair, and the best time of them an extra column")
    add_record_args(p, "peer_flower")
    args = p.parse_args()
    rec = Record.from_args(args, "peer_flower", __file__)
    only = [r for r in RUNNERS if r in args.only.split(",")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = f"{HERE}{os.pathsep}{REPO}"
    env["OMP_NUM_THREADS"] = "1"
    flower_python = ensure_flower(args.flower_python) if "flower" in only else None
    load_before = os.getloadavg()
    rec.load_before = list(load_before)  # the runs, not the Flower venv's set-up
    runs: dict[str, list[dict]] = {w: [] for w in only}
    with tempfile.TemporaryDirectory(prefix="peer-flower-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for rep in range(args.repeats):
            for which in only:
                print(f"running {which} ({rep + 1}/{args.repeats}) ...", flush=True)
                sub = work / f"{which}-{rep}"
                sub.mkdir(exist_ok=True)
                if which.startswith("fedsim"):
                    runs[which].append(run_fedsim(int(which[-1]), sub, env))
                else:
                    python = flower_python if which == "flower" else sys.executable
                    runs[which].append(run_peer(which, python, sub, env))
        results = {w: combine(r) for w, r in runs.items()}
        report(results, load_before, os.getloadavg(), args.repeats, rec, runs)
    rec.write({"repeats": args.repeats, "results": results,
               "runs": {w: [{k: v for k, v in r.items() if k != "state"} for r in rs] for w, rs in runs.items()}})
    return 0


def combine(runs: list[dict]) -> dict:
    """One run's figures — the median run by wall time of the repeats (of two, the slower; the
    only one, without repeats), so that wall and memory come from the same run — with the best
    wall time and time per round of all repeats beside them; every repeat must end at the same
    accuracy."""
    accs = {r["accuracy"] for r in runs}
    if len(accs) > 1:
        raise SystemExit(f"repeats of one runner ended at different accuracies: {sorted(accs)}")
    ranked = sorted(runs, key=lambda r: r["wall_s"])
    out = dict(ranked[len(ranked) // 2])
    out["best_wall_s"] = ranked[0]["wall_s"]
    out["best_per_round_s"] = min(r["per_round_s"] for r in runs)
    return out


def report(results: dict[str, dict], load_before, load_after, repeats: int = 1, rec: Record | None = None,
           runs: dict[str, list[dict]] | None = None) -> None:
    """The table and the ratios against their targets, on the console and into ``rec``."""
    import torch

    from fedsim.report import console_table
    from fedsim.ui import console

    labels = {"plain": "plain loop (1 process)", "fedsim1": "fedsim, 1 rank", "fedsim2": "fedsim, 2 ranks",
              "flower": "Flower + Ray (2 CPUs)"}
    which_run = f"; one run each (the median of {repeats})" if repeats > 1 else "; one run each"
    table = console_table(
        ["runner", "wall s", "s / round", "peak Σ RSS MB", "peak Σ PSS MB", "processes", "final accuracy",
         f"best of {repeats}: wall s", f"best of {repeats}: s / round"],
        [[labels[which], f"{r['wall_s']:.1f}", f"{r['per_round_s']:.2f}", f"{r['rss_mb']:.0f}", f"{r['pss_mb']:.0f}",
          str(r["procs"]), f"{r['accuracy']:.4f}", f"{r['best_wall_s']:.1f}", f"{r['best_per_round_s']:.2f}"]
         for which, r in results.items()],
        title=f"FedAvg, {JOB['silos']} clients × {JOB['samples']} images {JOB['size']}², small CNN, "
              f"{JOB['rounds']} rounds × {JOB['local_steps']} steps{which_run}, measured from outside")
    con = console()
    con.print(table)
    if rec is not None:
        rec.table(table)

    def say(line: str) -> None:
        con.print("  " + line, markup=False)
        if rec is not None:
            rec.note(line)

    def ratio(a, b, key, target):
        if a in results and b in results:
            v = results[a][key] / results[b][key]
            verdict = "" if not isinstance(target, float) else ("met" if v <= target else "MISSED")
            pairs = ""
            if runs is not None and len(runs.get(a, [])) > 1:  # repeat i against repeat i: the same load
                pairs = ", pair by pair " + " ".join(f"{x[key] / y[key]:.2f}" for x, y in zip(runs[a], runs[b]))
            say(f"{labels[a]} / {labels[b]}, {key}: {v:.2f}×  (target ≤ {target}{': ' + verdict if verdict else ''})"
                f"{pairs}")

    ratio("fedsim2", "flower", "wall_s", 0.5)
    ratio("fedsim2", "flower", "pss_mb", 0.4)
    ratio("fedsim2", "flower", "rss_mb", "—")
    ratio("fedsim1", "plain", "per_round_s", 1.1)
    ratio("fedsim2", "plain", "per_round_s", "—")
    states = {k: torch.load(r["state"]) for k, r in results.items() if Path(r["state"]).is_file()}
    if len(states) > 1:
        ref_name, ref = next(iter(states.items()))
        for k, s in states.items():
            if k != ref_name:
                diff = max(float((s[n].double() - ref[n].double()).abs().max()) for n in ref)
                say(f"final weights, {labels[k]} vs {labels[ref_name]}: max |Δ| = {diff:.2e}")
    accs = {round(r["accuracy"], 12) for r in results.values()}
    say(f"final accuracies {'agree' if len(accs) == 1 else 'DIFFER'}: "
        + ", ".join(f"{labels[k]} {r['accuracy']:.4f}" for k, r in results.items()))
    if "flower" in results:
        say(f"Flower's process tree: {', '.join(results['flower']['names'])}")
    con.print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
              f"({os.cpu_count()} CPUs, shared with other users)")


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
