"""Sweeps: one experiment over a grid of settings and several seeds, summarised as mean ± std.

``fedsim sweep CONFIG --set-grid key=v1,v2 … --seeds 0,1,2`` and the paper-table scripts share
this module: :func:`plan` resolves and checks every run before any starts, :func:`execute`
trains the runs not already finished (a run folder whose config matches is reused, an
interrupted one resumed), :func:`collect` reads their summaries into rows of mean ± std
(:func:`fedsim.stats.mean_std`: one seed has no std). Every run is an experiment of
:mod:`fedsim.experiment` (prepared in its own folder, launched with the others of its group in
one process group, finished).

Layout: ``OUT/<point>/seed<s>/`` is an ordinary run folder (``fedsim run`` writes the same), with
its ``compare_with`` baselines under ``baselines/`` and ``downstream.json`` when the downstream
stage is enabled; ``OUT/sweep.json`` holds every value, ``sweep.csv`` the means and stds,
``sweep.png`` Θ accuracy by round (mean ± std band) per point.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.downstream import image_sizes
from fedsim.errors import ConfigError
from fedsim.experiment import (
    check_run_dir,
    default_nproc,
    finish,
    launch_together,
    prepare,
    resolve_config,
    same_config,
)
from fedsim.plan import experiment_plans
from fedsim.stats import mean_std

#: summary fields aggregated per point (summary.json key → column title)
SUMMARY_METRICS = {
    "foundation_accuracy": "Θ acc",
    "foundation_accuracy_in_union": "Θ in-union acc",  # test cells some silo trains on (synthetic data)
    "foundation_accuracy_out_of_union": "Θ out-of-union acc",  # test cells no silo holds
    "foundation_val_accuracy": "Θ val acc",
    "foundation_val_loss": "Θ val loss",
    "mean_silo_accuracy": "silo acc",
    "mean_silo_val_accuracy": "silo val acc",
    "grad_steps_per_round": "grad steps/round",
    "mb_per_round": "MB/round",
    "epsilon": "ε",
    "wall_time_s": "wall s",
}
#: downstream.json fields (one row per initialisation)
DOWNSTREAM_METRICS = {"dice": "Dice", "miou": "mIoU", "jaccard": "Jaccard", "accuracy": "tube acc"}


@dataclass
class Point:
    """One setting of the grid: a label and the ``--set`` overrides that make it."""

    label: str
    overrides: list[str] = field(default_factory=list)
    folder: str | None = None  # the point's folder under the sweep's (default: from the label)


@dataclass
class Run:
    """One (point, seed): a resolved config and the folder it runs in."""

    point: Point
    seed: int
    cfg: Any
    run_dir: Path
    nproc: int


def split_values(text: str) -> list[str]:
    """``a,b,[1, 2],{x: 1}`` → ["a", "b", "[1, 2]", "{x: 1}"]: commas inside brackets stay."""
    out, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    out.append(current.strip())
    return [v for v in out if v]


def grid_points(grid: Sequence[str]) -> list[Point]:
    """The Cartesian product of ``key=v1,v2,…`` entries, in the order given (last key fastest)."""
    axes: list[tuple[str, list[str]]] = []
    for entry in grid:
        if "=" not in entry:
            raise ConfigError(f"--set-grid expects key=v1,v2,… (e.g. --set-grid fedefm.beta=0,0.2), got {entry!r}")
        key, values = entry.split("=", 1)
        vals = split_values(values)
        if not key.strip() or not vals:
            raise ConfigError(f"--set-grid {entry!r}: give a key and at least one value")
        if any(k == key.strip() for k, _ in axes):
            raise ConfigError(f"--set-grid: {key.strip()} is given twice")
        axes.append((key.strip(), vals))
    if not axes:
        return [Point("base", [])]
    points = []
    for combo in itertools.product(*[[(k, v) for v in vals] for k, vals in axes]):
        overrides = [f"{k}={v}" for k, v in combo]
        points.append(Point(",".join(overrides), overrides))
    return points


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in split_values(text)]
    except ValueError:
        raise ConfigError(f"--seeds expects integers separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: give distinct integers, got {text!r}")
    return seeds


def slug(label: str) -> str:
    """A folder name for a point label."""
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", label).strip("_") or "point"
    return text[:120]


def plan(config: str | Path | None, overrides: Sequence[str], points: Sequence[Point], seeds: Sequence[int],
         out: Path, nproc: int | None = None) -> list[Run]:
    """Every run of the sweep, each config loaded and checked against its topology now, so a bad
    value is one line before anything trains."""
    runs: list[Run] = []
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"sweep points must have distinct labels: {labels}")
    for point in points:
        for seed in seeds:
            cfg, topology = resolve_config(config, [*overrides, *point.overrides, f"seed={seed}"])
            folder = point.folder or slug(point.label)
            run_dir = out / folder / f"seed{seed}"
            cfg.name, cfg.output_dir = f"{folder}/seed{seed}", str(out)
            n = min(nproc or default_nproc(cfg, topology.num_silos), topology.num_silos)
            runs.append(Run(point, seed, cfg, run_dir, n))
    return runs


def _finished(run: Run) -> bool:
    saved = run.run_dir / "config.yaml"
    return (run.run_dir / "summary.json").is_file() and saved.is_file() and same_config(saved.read_text(), run.cfg) \
        and (not run.cfg.downstream.enabled or _current_downstream(run.run_dir / "downstream.json", run.cfg))


def _current_downstream(path: Path, cfg) -> bool:
    """Whether ``downstream.json`` comes from today's downstream recipe: rows fine-tuned once per
    fine-tune seed (``per_seed``) on images of the configured sizes (segmentation at 96
    since the guidewire finding; older rows do not record them). Older files used another recipe, so
    unlike a config key that grew a default they cannot be reused."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    sizes = image_sizes(cfg.downstream, cfg.data.image_size)
    return isinstance(rows, list) and bool(rows) and all(
        isinstance(r, dict) and "per_seed" in r and r.get("image_sizes") == sizes for r in rows)


def check_folders(runs: Sequence[Run]) -> None:
    """A run folder that already holds another config is never overwritten (every folder is
    checked before any run starts)."""
    for run in runs:
        check_run_dir(run.run_dir, run.cfg)


def execute(runs: Sequence[Run], parallel: int = 1, log: Callable[[str], None] = print) -> None:
    """Train every run not finished yet (interrupted ones continue from their checkpoint), up to
    ``parallel`` process groups at a time; runs of one group share one process group
    (:func:`fedsim.experiment.launch_together`)."""
    check_folders(runs)
    todo = [r for r in runs if not _finished(r)]
    for run in runs:
        if run not in todo:
            log(f"  reuse {run.run_dir} (finished, same config)")
    if not todo:
        return
    # each in its own folder, continuing what an interrupted attempt left there
    prepared = {id(run): prepare(run.cfg, nproc=run.nproc, run_dir=run.run_dir) for run in todo}
    groups: list[list[Run]] = []
    for n in sorted({r.nproc for r in todo}):
        same = [r for r in todo if r.nproc == n]
        k = max(1, min(parallel, len(same)))
        groups += [same[i::k] for i in range(k)]
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(group: list[Run]) -> None:
        try:
            started = time.perf_counter()
            with lock:
                log(f"spawning {group[0].nproc} rank(s) for {len(group)} run(s): "
                    f"{', '.join(str(r.run_dir.relative_to(r.run_dir.parents[1])) for r in group)}")
            for result in launch_together([prepared[id(r)] for r in group]):
                finish(result)
            with lock:
                log(f"  done in {time.perf_counter() - started:.0f} s")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:  # at most `parallel` groups at once
        list(pool.map(work, groups))
    if errors:
        raise errors[0]


def _job_values(summary: dict[str, Any]) -> dict[str, Any]:
    values = {k: summary.get(k) for k in SUMMARY_METRICS if k in summary}
    values["mb_per_round"] = summary.get("bytes_per_round", 0.0) / 1e6
    return values


def collect(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (point, trained model) — the main run, each ``compare_with`` baseline and,
    with the downstream stage, random initialisation — holding every seed's values and their
    mean and sample standard deviation (n − 1; None for one seed)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        downstream = {}
        ds_path = run.run_dir / "downstream.json"
        if ds_path.is_file():
            downstream = {r["init"]: r for r in json.loads(ds_path.read_text())}
        for plan in experiment_plans(run.cfg, run.run_dir, run.nproc):
            job_dir = plan.run_dir
            summary = json.loads((Path(job_dir) / "summary.json").read_text())
            label = plan.label
            values = _job_values(summary)
            values.update({k: downstream.get(label, {}).get(k) for k in DOWNSTREAM_METRICS if downstream})
            row = rows.setdefault((run.point.label, label), {"point": run.point.label, "label": label, "seeds": {}})
            row["seeds"][run.seed] = {"values": values, "run_dir": str(job_dir),
                                      "foundation_by_round": summary.get("foundation_accuracy_by_round")}
        if "random" in downstream:
            values = {k: downstream["random"].get(k) for k in DOWNSTREAM_METRICS}
            row = rows.setdefault((run.point.label, "random init"), {"point": run.point.label, "label": "random init",
                                                                   "seeds": {}})
            row["seeds"][run.seed] = {"values": values, "run_dir": str(run.run_dir), "foundation_by_round": None}
    out = []
    for row in rows.values():
        keys = dict.fromkeys(k for s in row["seeds"].values() for k in s["values"])
        row["mean"], row["std"] = {}, {}
        for key in keys:
            row["mean"][key], row["std"][key] = mean_std([s["values"].get(key) for s in row["seeds"].values()])
        out.append(row)
    return out


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The metrics some row has a value of, in the order of SUMMARY_METRICS, DOWNSTREAM_METRICS."""
    present = {k for r in rows for k, v in r["mean"].items() if v is not None}
    return [k for k in (*SUMMARY_METRICS, *DOWNSTREAM_METRICS) if k in present]


def write_outputs(rows: Sequence[dict[str, Any]], out: Path, title: str = "") -> None:
    """sweep.json (every value), sweep.csv (mean and std per column), sweep.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(list(rows), indent=2, default=str))
    cols = columns(rows)
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["point", "model", "seeds", *[f"{c}_{s}" for c in cols for s in ("mean", "std")]])
        for row in rows:
            writer.writerow([row["point"], row["label"], len(row["seeds"]),
                             *[row[s].get(c) for c in cols for s in ("mean", "std")]])
    plot_rows(rows, out / "sweep.png", title)


def plot_rows(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Θ accuracy by round per (point, model): the mean over seeds with a ± std band."""
    curves = []
    for row in rows:
        series = [s["foundation_by_round"] for s in row["seeds"].values() if s.get("foundation_by_round")]
        if series:
            curves.append((f"{row['point']}: {row['label']}" if row["point"] != "base" else row["label"], series))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for n, (label, series) in enumerate(curves):
        pts = [[v for v in vals] for vals in zip(*series)]
        rounds = [k for k, vals in enumerate(pts) if all(v is not None for v in vals)]
        stats = [mean_std(pts[k]) for k in rounds]
        mean = [m for m, _ in stats]
        std = [s or 0.0 for _, s in stats]  # one seed: no band
        color = f"C{n % 10}"
        ax.plot(rounds, mean, marker="o", ms=3, color=color, label=f"{label} (n={len(series)})")
        ax.fill_between(rounds, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=color, alpha=0.15)
    ax.set_xlabel("round")
    ax.set_ylabel("foundation Θ test accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
