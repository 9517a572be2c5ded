"""Start ranks: spawn them on this machine (``python -m fedsim run``) or join a torchrun job.

A worker that raises a :class:`FedsimError` reports it to the parent, which prints one line and
exits 2; any other failure ends every rank (no rank is left waiting on a dead peer).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fedsim.distributed import free_port, init_process_group, pick_device
from fedsim.errors import FedsimError


@dataclass(frozen=True)
class RankContext:
    """Who this process is in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def _worker(
    local_rank: int,
    fn: Callable[..., Any],
    world_size: int,
    port: int,
    device: str,
    timeout_s: float,
    threads: int,
    result_dir: str,
    args: tuple,
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    outcome: tuple[str, Any]
    try:
        ctx = RankContext(local_rank, world_size, local_rank, pick_device(device, local_rank))
        init_process_group(ctx.device, ctx.rank, world_size, timeout_s)
        outcome = ("ok", fn(ctx, *args))
    except FedsimError as exc:
        outcome = ("fedsim", exc)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then re-raised
        outcome = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a peer may already be gone
                pass
    with open(Path(result_dir) / f"rank{local_rank}.pkl", "wb") as fh:
        pickle.dump(outcome, fh)
    if outcome[0] == "error":
        raise RuntimeError(outcome[1])


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    device: str = "cpu",
    timeout_s: float = 300.0,
    threads: int = 1,
) -> list[Any]:
    """Run ``fn(ctx, *args)`` on ``world_size`` fresh processes; return each rank's result.

    ``fn`` must be importable (a module-level function). A FedsimError raised on any rank is
    re-raised here; another exception becomes a RuntimeError carrying the rank's traceback.
    Each rank uses ``threads`` intra-op CPU threads (default 1: CPU kernels then sum in the same
    order whatever the placement, so 1, 2 or 4 ranks give bit-identical models).
    """
    with tempfile.TemporaryDirectory(prefix="fedsim-") as tmp:
        try:
            mp.start_processes(
                _worker,
                args=(fn, world_size, free_port(), device, timeout_s, threads, tmp, args),
                nprocs=world_size,
                join=True,
                start_method="spawn",
            )
        except mp.ProcessRaisedException as exc:
            raise RuntimeError(str(exc)) from None
        except mp.ProcessExitedException as exc:
            # A rank killed by a signal: prefer a FedsimError reported by a peer, if any.
            _raise_reported(tmp)
            raise RuntimeError(f"a rank exited unexpectedly: {exc}") from None
        return _collect(tmp, world_size)


def _raise_reported(tmp: str) -> None:
    for path in sorted(Path(tmp).glob("rank*.pkl")):
        with open(path, "rb") as fh:
            status, value = pickle.load(fh)
        if status == "fedsim":
            raise value


def _collect(tmp: str, world_size: int) -> list[Any]:
    _raise_reported(tmp)
    results = []
    for rank in range(world_size):
        with open(Path(tmp) / f"rank{rank}.pkl", "rb") as fh:
            results.append(pickle.load(fh)[1])
    return results


def join_torchrun(fn: Callable[..., Any], *args: Any, device: str = "auto", timeout_s: float = 300.0) -> Any:
    """Run ``fn(ctx, *args)`` in this process as one rank of a torchrun job (env:// rendezvous)."""
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    ctx = RankContext(rank, world_size, local_rank, pick_device(device, local_rank))
    torch.set_num_threads(1)  # as spawned ranks: results independent of placement
    init_process_group(ctx.device, rank, world_size, timeout_s)
    try:
        return fn(ctx, *args)
    finally:
        dist.destroy_process_group()
