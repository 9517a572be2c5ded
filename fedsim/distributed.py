"""The one place that knows about ranks: backend and device choice, process-group set-up and
teardown, determinism, the silo → rank placement, and every collective the project uses.

Each collective is a no-op (or the identity) without a process group or with one rank, so the
same code runs in a single process. Only this module and :mod:`fedsim.transport` (silo-to-silo
messages) import ``torch.distributed``."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from fedsim.errors import ConfigError


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """cuda:LOCAL_RANK when a GPU is asked for or available, else the CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was requested but no CUDA GPU is visible; use device: cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """NCCL for GPUs, gloo for the CPU — the only place the backend is chosen."""
    return "nccl" if device.type == "cuda" else "gloo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


@dataclass(frozen=True)
class Placement:
    """Which rank hosts which silo: contiguous, balanced blocks (silo order is preserved)."""

    num_silos: int
    world_size: int

    def rank_of(self, silo: int) -> int:
        for rank in range(self.world_size):
            if silo < (rank + 1) * self.num_silos // self.world_size:
                return rank
        raise IndexError(f"silo {silo} is not in 0..{self.num_silos - 1}")

    def silos_on(self, rank: int) -> list[int]:
        lo = rank * self.num_silos // self.world_size
        hi = (rank + 1) * self.num_silos // self.world_size
        return list(range(lo, hi))


def init_process_group(device: torch.device, rank: int, world_size: int, timeout_s: float,
                       attempt: int | None = None) -> None:
    """Join the default group and run one all-reduce so the communicator exists before any
    point-to-point call (NCCL requires every rank in the first call of a group).

    ``attempt`` (torchrun's restart count): the env:// store is the elastic agent's, which outlives
    a restart, so every key the group writes is prefixed by the attempt — otherwise a restarted
    rank can read a dead peer's address from the attempt before and fail to connect to it."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_s)
    store = None
    if attempt is not None:
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=timeout))
        store = dist.PrefixStore(f"fedsim/attempt_{attempt}", store)
    dist.init_process_group(
        backend_for(device),
        rank=rank,
        world_size=world_size,
        timeout=timeout,
        store=store,
        device_id=device if device.type == "cuda" else None,
    )
    warm = torch.zeros(1, device=device)
    dist.all_reduce(warm)


def use_deterministic_algorithms(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms`` without importing TorchInductor.

    torch's function imports ``torch._inductor.config`` — and with it TorchDynamo, ~1 s and
    ~160 MB per process, more than a small job's training — only to hand the flag to
    ``torch.compile``'s code generator, which fedsim never runs. This sets the same kernel flag;
    when TorchInductor is already loaded (someone compiles in this process) it goes through
    torch's function, so that its flag follows too."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


def set_determinism(seed: int, threads: int | None = None) -> None:
    """Seeded, repeatable runs: fixed RNG, deterministic kernels, a fixed thread count."""
    torch.manual_seed(seed)
    use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
    if threads is not None:
        torch.set_num_threads(max(1, threads))


def close_process_group(success: bool) -> None:
    """Leave the process group. After a successful run every rank first waits for the others
    (rank 0 may still evaluate and write): tearing gloo down while a peer still uses its
    connections can abort the process at exit."""
    if not dist.is_initialized():
        return
    try:
        if success:
            dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - a peer may already be gone
        pass


# ---- collectives ----------------------------------------------------------------------------------

def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_initialized() and dist.get_world_size() > 1


def barrier(tolerate_failure: bool = False) -> None:
    """Wait for every rank. ``tolerate_failure``: a peer that is already gone is not an error."""
    if not is_distributed():
        return
    try:
        dist.barrier()
    except Exception:  # noqa: BLE001
        if not tolerate_failure:
            raise


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over every rank (in place)."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``tensor`` over every rank (in place)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def gather_objects(obj, dst: int = 0) -> list | None:
    """Every rank's picklable ``obj`` on rank ``dst`` (a list in rank order; None elsewhere)."""
    if not is_distributed():
        return [obj]
    rank = dist.get_rank()
    out = [None] * dist.get_world_size() if rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffer(buf: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s tensor ``buf`` into ``buf`` on every rank (same shape and dtype everywhere)."""
    if is_distributed():
        dist.broadcast(buf, src=src)
    return buf
