"""Start ranks: spawn them on this machine (``python -m fedsim run``) or join a torchrun job.

A worker that raises a :class:`FedsimError` reports it to the parent, which prints one line and
exits 2; any other failure ends every rank (no rank is left waiting on a dead peer).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from fedsim.distributed import barrier, close_process_group, free_port, init_process_group, pick_device
from fedsim.errors import FedsimError, SiloFailure

_REPORTED = 3  # exit code of a rank that reported a FedsimError to the parent


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
    if outcome[0] == "ok":  # rank 0 may still be evaluating and writing: wait for it
        barrier(tolerate_failure=True)
    with open(Path(result_dir) / f"rank{local_rank}.pkl", "wb") as fh:
        pickle.dump(outcome, fh)
    if outcome[0] == "error":
        raise RuntimeError(outcome[1])
    # Leave without tearing the process group down and without C++ static destructors: gloo's
    # teardown while a peer closes its sockets aborted a rank now and then ("terminate called
    # without an active exception", SIGABRT) after a run that had succeeded. The result is on
    # disk; the kernel closes the sockets.
    sys.stdout.flush()
    sys.stderr.flush()
    # A FedsimError exits non-zero so the parent stops every other rank at once (a peer may be
    # blocked in a collective waiting for this one); the parent reads the reported error.
    os._exit(0 if outcome[0] == "ok" else _REPORTED)


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
    # torch logs a warning for every rank it stops after another failed; we report the cause
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
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
            _raise_failure(tmp, world_size, exc)
        return _collect(tmp, world_size)


def _reported(tmp: str) -> dict[int, tuple[str, Any]]:
    out = {}
    for path in Path(tmp).glob("rank*.pkl"):
        with open(path, "rb") as fh:
            out[int(path.stem[4:])] = pickle.load(fh)
    return out


def _raise_failure(tmp: str, world_size: int, exc: mp.ProcessExitedException) -> None:
    """Turn a rank that ended the job into one clear error.

    A rank that raised a FedsimError reported it: a peer that lost contact with a dead or
    stalled rank reports a SiloFailure, and the ranks that reported nothing are the culprits.
    """
    reported = _reported(tmp)
    errors = [v for status, v in reported.values() if status == "fedsim"]
    lost = [e for e in errors if isinstance(e, SiloFailure)]
    if errors and not lost:
        raise errors[0]
    if exc.exit_code == _REPORTED and lost:
        # a peer timed out waiting: the ranks that never reported are the stalled ones
        culprits = sorted(set(range(world_size)) - set(reported)) or [exc.error_index]
        raise SiloFailure(f"rank(s) {', '.join(map(str, culprits))} stopped answering ({lost[0]})", ranks=culprits)
    how = f"exited with code {exc.exit_code}" if exc.signal_name is None else f"was killed ({exc.signal_name})"
    raise SiloFailure(f"rank {exc.error_index} {how}", ranks=[exc.error_index])


def _raise_reported(tmp: str) -> None:
    for status, value in _reported(tmp).values():
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
    success = False
    try:
        result = fn(ctx, *args)
        success = True
        return result
    finally:
        close_process_group(success)
