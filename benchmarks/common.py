"""What the benchmark tables share beyond :mod:`fedsim.sweep` (which plans, runs and reuses the
runs and gives mean ± std): ``--seeds`` for argparse, a cell shown as "m ± s" in %, a cell's
values for JSON, the summaries of a sweep keyed by (point, seed), and the simulated time to a
target accuracy.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def seeds_arg(text: str) -> list[int]:
    """argparse ``type=`` for ``--seeds``: :func:`fedsim.sweep.parse_seeds`, its error as a usage error."""
    from fedsim.errors import ConfigError
    from fedsim.sweep import parse_seeds

    try:
        return parse_seeds(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pm(values: Iterable[float | None]) -> str:
    """``"m ± s"`` in % of the values (sample std over seeds), "–" when there are none."""
    from fedsim.sweep import mean_std

    m, sd = mean_std(list(values))
    return "–" if m is None else f"{100 * m:.1f} ± {100 * sd:.1f}"


def cell_stats(values: Iterable[float | None]) -> dict[str, Any]:
    """A cell for JSON: mean, sample std and every seed's value."""
    from fedsim.sweep import mean_std

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
