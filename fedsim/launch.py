"""Start ranks: spawn them on this machine (``python -m fedsim run``) or join a torchrun job.

A worker that raises a :class:`FedsimError` reports it to the parent, which prints one line and
exits 2; any other failure ends every rank (no rank is left waiting on a dead peer).
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from fedsim.distributed import (
    barrier,
    close_process_group,
    free_port,
    init_process_group,
    pick_device,
    use_deterministic_algorithms,
)
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


def spawn_here(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    device: str = "cpu",
    timeout_s: float = 300.0,
    threads: int = 1,
    grace_s: float = 30.0,
) -> Any:
    """Run ``fn(ctx, *args)`` as rank 0 in *this* process and on ``world_size - 1`` new ones;
    return rank 0's result (what ``fedsim run`` needs: the other ranks' results are None).

    Why not :func:`spawn`: a launcher that only waits still holds a whole interpreter with torch
    (~0.5 GB here) and re-imports torch in every rank. On the CPU the other ranks are forked, so
    they start at once and share this process's pages until they write them; with CUDA they are
    spawned (CUDA does not survive a fork). Errors keep :func:`spawn`'s contract: a FedsimError
    of any rank is raised here; a rank that dies or stalls is a SiloFailure naming it. A rank 0
    blocked in a collective cannot be interrupted, so when another rank ends abnormally and rank 0
    has not returned within ``grace_s``, the error is printed as the CLI prints it and this
    process exits with status 2. The process group is destroyed before returning, so this
    process can run another job.
    """
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    fork = not cuda and sys.platform == "linux"
    mpctx = mp.get_context("fork" if fork else "spawn")
    if fork:
        # the garbage collector would write to every object the ranks inherited, copying the pages
        # they share; frozen objects are left alone (until the job is over)
        gc.collect()
        gc.freeze()
    try:
        return _spawn_here(fn, world_size, args, device, timeout_s, threads, grace_s, mpctx)
    finally:
        gc.unfreeze()


def _spawn_here(fn, world_size: int, args: tuple, device: str, timeout_s: float, threads: int, grace_s: float,
                mpctx) -> Any:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fedsim-") as tmp:
        procs = {r: mpctx.Process(target=_worker, args=(r, fn, world_size, port, device, timeout_s, threads, tmp, args),
                                  daemon=True) for r in range(1, world_size)}
        for p in procs.values():
            p.start()
        done = threading.Event()
        watcher = threading.Thread(target=_watch, args=(procs, tmp, world_size, done, grace_s), daemon=True)
        watcher.start()
        try:
            result = _run_here(fn, world_size, port, device, timeout_s, threads, args)
        except FedsimError as exc:
            done.set()
            watcher.join()  # one thread reaps the ranks at a time (two waitpid calls race)
            _stop(procs)
            close_process_group(False)
            _raise_here(exc, procs, tmp, world_size)
        except BaseException:
            done.set()
            watcher.join()
            _stop(procs)
            close_process_group(False)
            raise
        done.set()
        watcher.join()
        for p in procs.values():  # they leave right after the final barrier
            p.join(timeout=timeout_s)
        bad = {r: p.exitcode for r, p in procs.items() if p.exitcode != 0}
        _stop(procs)
        close_process_group(False)  # the peers are gone: nothing left to wait for
        if bad:
            _raise_reported(tmp)
            r, code = next(iter(bad.items()))
            raise SiloFailure(f"rank {r} exited with code {code}", ranks=[r])
        return result


def _run_here(fn, world_size: int, port: int, device: str, timeout_s: float, threads: int, args: tuple) -> Any:
    """Rank 0 in this process, leaving its thread count, RNG and determinism setting as they were
    (the launcher goes on to plot and fine-tune after the run)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    saved_threads, saved_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            ctx = RankContext(0, world_size, 0, pick_device(device, 0))
            init_process_group(ctx.device, 0, world_size, timeout_s)
            result = fn(ctx, *args)
            barrier()  # the others write their results and leave after this
        return result
    finally:
        torch.set_num_threads(saved_threads)
        use_deterministic_algorithms(saved_det)


def _stop(procs: dict[int, Any]) -> None:
    for p in procs.values():
        if p.is_alive():
            p.kill()
    for p in procs.values():
        p.join(timeout=10)


def _raise_here(exc: FedsimError, procs: dict[int, Any], tmp: str, world_size: int) -> None:
    """Rank 0 raised ``exc``: a peer's own reported error explains more than rank 0's lost
    connection; a lost peer is named by its rank (it died, or never reported)."""
    reported = _reported(tmp)
    errors = [v for status, v in reported.values() if status == "fedsim" and not isinstance(v, SiloFailure)]
    if errors:
        raise errors[0] from None
    if isinstance(exc, SiloFailure):
        culprits = sorted(r for r, p in procs.items() if r not in reported)
        if culprits:
            raise SiloFailure(f"rank(s) {', '.join(map(str, culprits))} stopped answering ({exc})",
                              ranks=culprits) from None
    raise exc


def _watch(procs: dict[int, Any], tmp: str, world_size: int, done: threading.Event, grace_s: float) -> None:
    """Waits for a rank other than 0 to end abnormally; if rank 0 has not returned ``grace_s``
    later (blocked waiting for the lost peer), reports and ends this process."""
    pending = dict(procs)
    while pending and not done.is_set():
        for sentinel in wait([p.sentinel for p in pending.values()], timeout=0.5):
            r = next(r for r, p in pending.items() if p.sentinel == sentinel)
            p = pending.pop(r)
            p.join()
            if p.exitcode != 0 and not done.wait(grace_s):
                _stop(procs)
                reported = _reported(tmp)
                errors = [v for status, v in reported.values() if status == "fedsim"]
                lost = [e for e in errors if isinstance(e, SiloFailure)]
                if errors and not lost:
                    message = str(errors[0])
                elif lost:  # a peer timed out waiting: rank 0, which never reported, is the stalled one
                    message = f"silo(s) on rank 0 failed or stalled — rank(s) 0 stopped answering ({lost[0]})"
                else:
                    message = f"rank {r} exited with code {p.exitcode}"
                print(f"fedsim: error: {message}", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(2)


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
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    init_process_group(ctx.device, rank, world_size, timeout_s, attempt=attempt)
    success = False
    try:
        result = fn(ctx, *args)
        success = True
        return result
    finally:
        close_process_group(success)
