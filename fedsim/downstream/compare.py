"""Several initializations (random, FedAvg Θ, FedEFM Θ, …) fine-tuned on the *same* downstream data
with the same fine-tune seeds: one row per initialization, each score's mean and standard deviation
over the seeds, and the paired difference to random initialization."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedsim.config.downstream import DownstreamConfig
from fedsim.downstream.data import downstream_config, image_sizes, make_downstream_data
from fedsim.downstream.weights import check_fit, model_config, resolve_init
from fedsim.downstream.workers import run_jobs, usable_cpus
from fedsim.errors import ConfigError
from fedsim.stats import mean_std


def compare_initializations(inits: dict[str, str | Path | dict | None], model_cfg=None,
                            ds_cfg: DownstreamConfig | dict | None = None, image_size: int = 64,
                            seed: int | None = None, progress=None, split: str = "test") -> list[dict]:
    """One row per ``{name: init}`` (None = random, a path to ``foundation.pt``, or a state dict).

    Every row is fine-tuned once per fine-tune seed in ``ds_cfg.seeds`` on the same downstream data
    (drawn from ``seed``, default ``ds_cfg.seed``); seed k gives every row the same decoder/head
    initialisation and batch order, so rows differ only by the initial encoder weights. A row
    holds, for every score (``dice``, ``miou``, ``jaccard``, ``dice_catheter``, ``accuracy``, …),
    the mean over the seeds under its own name and the sample standard deviation as
    ``<score>_std`` (NaN with one seed); with a random row (init None) every other row also gets
    ``dice_delta`` / ``accuracy_delta`` (+ ``_std``): the mean and std over seeds of its paired
    difference to random init. Also ``init``, ``source``, ``seeds``, ``per_seed`` (one dict of
    scores per seed), ``domain``, ``split``, ``steps``, ``seg_steps``, ``seed``, ``seconds``
    (the row's fine-tuning time, summed over its seeds). Every file is loaded and checked against
    the model before any training, so a bad path fails fast. ``split="val"`` scores on held-out
    training images (:func:`make_downstream_data`). The fine-tunes (rows × seeds) run in
    ``ds_cfg.workers`` processes (0: one per usable core); each is single-threaded, so the
    scores do not depend on the number. ``progress``: optional callable(str) told what runs."""
    ds_cfg, mcfg = downstream_config(ds_cfg), model_config(model_cfg)
    seed = ds_cfg.seed if seed is None else int(seed)
    if not inits:
        raise ConfigError("compare_initializations needs at least one initialization")
    resolved = {name: resolve_init(init) for name, init in inits.items()}
    check_fit(resolved, mcfg)
    sizes = image_sizes(ds_cfg, int(image_size))
    data = {task: make_downstream_data(ds_cfg, int(image_size), seed, split, task) for task in sizes}
    jobs = [(state, mcfg, ds_cfg, int(image_size), int(s), source)
            for state, source in resolved.values() for s in ds_cfg.seeds]
    workers = min(len(jobs), ds_cfg.workers or usable_cpus())
    if progress is not None:
        progress(f"{', '.join(resolved)} × seeds {','.join(map(str, ds_cfg.seeds))}: {len(jobs)} fine-tunes"
                 + (f" in {workers} processes" if workers > 1 else ""))
    results = iter(run_jobs(jobs, data, workers))
    rows = []
    for name, (state, source) in resolved.items():
        per_seed = [next(results) for _ in ds_cfg.seeds]
        row: dict[str, Any] = {"init": name, "source": source, **_mean_std(per_seed)}
        spent = sum(r.get("seg_seconds", 0.0) + r.get("cls_seconds", 0.0) for r in per_seed)
        row.update(seeds=list(ds_cfg.seeds), per_seed=per_seed, domain=ds_cfg.domain or "all", split=split,
                   steps=ds_cfg.num_steps(), seg_steps=ds_cfg.seg_warmup_steps + ds_cfg.seg_steps, seed=seed,
                   image_sizes={task: int(d.train.images.shape[-1]) for task, d in data.items()},
                   seconds=spent, random_init=state is None)
        rows.append(row)
    _paired_deltas(rows)
    return rows


def _nan_for_none(stat: tuple[float | None, float | None]) -> tuple[float, float]:
    """A row's scores are floats, NaN where there is none (no value; a std of one seed)."""
    return tuple(math.nan if v is None else v for v in stat)  # type: ignore[return-value]


def _mean_std(per_seed: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in per_seed[0]:
        if key == "seed":
            continue
        m, s = _nan_for_none(mean_std([r.get(key) for r in per_seed]))
        out[key] = m
        out[f"{key}_std"] = s
    return out


def _paired_deltas(rows: list[dict]) -> None:
    """``<score>_delta`` (+ ``_std``) of every row against the first random-init row, seed by seed."""
    ref = next((r for r in rows if r["random_init"]), None)
    if ref is None:
        return
    for row in rows:
        if row is ref:
            continue
        for key in ("dice", "accuracy"):
            if key not in row:
                continue
            diffs = [a.get(key, math.nan) - b.get(key, math.nan) for a, b in zip(row["per_seed"], ref["per_seed"])]
            row[f"{key}_delta"], row[f"{key}_delta_std"] = _nan_for_none(mean_std(diffs))
