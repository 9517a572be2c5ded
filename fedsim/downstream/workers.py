"""Where the fine-tunes run: here, or in a pool of spawned single-thread processes; every fine-tune
is single-threaded, so the scores do not depend on the number of processes."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from fedsim.config.downstream import DownstreamConfig
from fedsim.downstream.data import DownstreamData
from fedsim.downstream.finetune import finetune_classification, finetune_segmentation


def finetune_all(state: dict | None, mcfg, ds_cfg: DownstreamConfig, image_size: int, seed: int, source: str,
                 data: dict[str, DownstreamData]) -> dict:
    """One fine-tune seed of one initialization: every configured task, on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores: dict[str, Any] = {"seed": seed}
        if "segmentation" in ds_cfg.tasks:
            scores.update(finetune_segmentation(state, mcfg, ds_cfg, image_size, seed, data=data["segmentation"],
                                                source=source))
        if "classification" in ds_cfg.tasks:
            scores.update(finetune_classification(state, mcfg, ds_cfg, image_size, seed, data=data["classification"],
                                                  source=source))
        return scores
    finally:
        torch.set_num_threads(threads)


_WORKER_DATA: dict[str, DownstreamData] | None = None


def _worker_init(data: dict[str, DownstreamData]) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data
    torch.set_num_threads(1)


def _worker_job(args: tuple) -> dict:
    return finetune_all(*args, data=_WORKER_DATA)


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(jobs: list[tuple], data: dict[str, DownstreamData], workers: int) -> list[dict]:
    """Every ``(state, mcfg, ds_cfg, image_size, seed, source)`` fine-tune, in order: here when
    ``workers`` is 1, else in a pool of spawned single-thread processes (spawn, not fork: the
    caller may hold threads or a process group). The downstream data travel once per worker."""
    if workers <= 1 or len(jobs) <= 1:
        return [finetune_all(*job, data=data) for job in jobs]

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(data,)) as pool:
        return list(pool.map(_worker_job, jobs))
