"""Plots of finished runs: accuracy per round and against simulated network time; FedEFM's
teacher weights per silo and round."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedsim.callbacks.jsonl import metric_files, read_records
from fedsim.errors import ConfigError


def read_rounds(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per-round rows of a run from its metrics/silo_<i>.jsonl files: round, mean silo
    accuracy, foundation accuracy, simulated time (max over silos), wall time."""
    if not metric_files(run_dir):
        raise ConfigError(f"{run_dir}: no metrics/silo_*.jsonl here; is this a fedsim run folder?")
    rows = []
    for k, recs in read_records(run_dir).items():
        accs = [r["accuracy"] for r in recs if r.get("accuracy") is not None]
        rows.append({
            "round": k,
            "accuracy": sum(accs) / len(accs) if accs else None,
            "foundation_accuracy": recs[0].get("foundation_accuracy"),
            "sim_time_ms": max(r.get("sim_time_ms", 0.0) for r in recs),
            "wall_time_s": max(r.get("wall_time_s", 0.0) for r in recs),
        })
    return rows


def _metric(run_dir: str | Path) -> str:
    """What a run's "accuracy" fields hold: "accuracy", or "dice" for ``task: segmentation``."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()).get("metric", "accuracy") if path.is_file() else "accuracy"


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Mean silo accuracy and foundation (Θ) accuracy vs round and vs simulated time, one
    curve per run, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_round, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for n, run_dir in enumerate(run_dirs):
        rows = read_rounds(run_dir)
        label = labels[n] if labels else Path(run_dir).name
        color = f"C{n % 10}"
        for key, style, suffix in (("accuracy", "-", "silos (mean)"), ("foundation_accuracy", "--", "Θ")):
            pts = [(r["round"], r["sim_time_ms"] / 1e3, r[key]) for r in rows if r[key] is not None]
            if not pts:
                continue
            rounds, times, acc = zip(*pts)
            by_round.plot(rounds, acc, style, color=color, marker="o", ms=3, label=f"{label}: {suffix}")
            by_time.plot(times, acc, style, color=color, marker="o", ms=3, label=f"{label}: {suffix}")
    by_round.set_xlabel("round")
    by_time.set_xlabel("simulated network time (s)")
    ylabel = "test Dice" if all(_metric(d) == "dice" for d in run_dirs) else "test accuracy"
    for ax in (by_round, by_time):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    by_round.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def read_teacher_weights(run_dir: str | Path) -> dict[int, dict[str, dict[int, list[tuple[int, float]]]]]:
    """Per silo, the ``teacher_weights`` and ``teacher_similarity`` records of a run as
    ``{silo: {"teacher_weights": {j: [(round, value), ...]}, "teacher_similarity": {...}}}``
    (rounds ascending; only the rounds in which the silo distilled)."""
    if not metric_files(run_dir):
        raise ConfigError(f"{run_dir}: no metrics/silo_*.jsonl here; is this a fedsim run folder?")
    out: dict[int, dict[str, dict[int, list[tuple[int, float]]]]] = {}
    for k, recs in read_records(run_dir).items():
        for rec in recs:
            for key in ("teacher_weights", "teacher_similarity"):
                for j, value in (rec.get(key) or {}).items():
                    series = out.setdefault(rec["silo"], {"teacher_weights": {}, "teacher_similarity": {}})[key]
                    series.setdefault(int(j), []).append((k, value))
    if not out:
        raise ConfigError(f"{run_dir}: the run has no teacher weights in metrics/silo_*.jsonl "
                          "(only FedEFM's distillation rounds record them); plot it without --weights")
    return dict(sorted(out.items()))


def plot_teacher_weights(run_dir: str | Path, out: str | Path) -> Path:
    """Per silo, two panels against round: the weight w_ij of each teacher j (above) and its EMD
    similarity s_ij (below; absent under ``emd.backend: uniform``), from the run's metric records.
    Each panel is scaled to its own values, so small departures from uniform weights show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = read_teacher_weights(run_dir)
    cols = min(len(series), 4)
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(4 * cols, 5 * rows), sharex=True, squeeze=False)
    for n, (i, got) in enumerate(series.items()):
        top, bottom = axes[2 * (n // cols), n % cols], axes[2 * (n // cols) + 1, n % cols]
        for ax, key, what in ((top, "teacher_weights", "weight w_ij"), (bottom, "teacher_similarity", "EMD similarity s_ij")):
            for j, points in sorted(got[key].items()):
                rounds, values = zip(*points)
                ax.plot(rounds, values, color=f"C{j % 10}", marker="o", ms=3, label=f"teacher {j}")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if got[key]:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "not recorded (uniform weights)", ha="center", va="center", transform=ax.transAxes)
        top.set_title(f"silo {i}")
        bottom.set_xlabel("round")
    for n in range(len(series), rows * cols):
        axes[2 * (n // cols), n % cols].set_visible(False)
        axes[2 * (n // cols) + 1, n % cols].set_visible(False)
    fig.suptitle(f"{Path(run_dir).name}: EMD weight and similarity of each teacher, by round")
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` (its folder made) and free it."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
