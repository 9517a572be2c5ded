"""Silo-level messaging on top of torch.distributed.

Algorithms say "send these tensors from silo j to silo i"; the transport decides whether that
is a local hand-off (both silos on this rank) or a point-to-point message. All messages from one
rank to another in an exchange travel as one flat contiguous byte buffer, posted with
``batch_isend_irecv`` so each send is matched by exactly one receive on the peer. Every message
is counted in bytes per (src, dst) silo edge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

from fedsim.distributed import Placement

Key = tuple[int, int]  # (sending silo, receiving silo)
_ALIGN = 16  # pad every tensor's bytes so each unpacked view is aligned for its dtype


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _padded(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def message_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Payload size of one message (what is counted per edge)."""
    return sum(_nbytes(t) for t in tensors)


def pack(messages: Sequence[Sequence[torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Concatenate the raw bytes of every tensor of every message into one uint8 buffer."""
    total = sum(_padded(_nbytes(t)) for msg in messages for t in msg)
    buf = torch.empty(total, dtype=torch.uint8, device=device)
    offset = 0
    for msg in messages:
        for t in msg:
            n = _nbytes(t)
            buf[offset : offset + n].view(t.dtype).copy_(t.detach().reshape(-1))
            offset += _padded(n)
    return buf


def unpack(buf: torch.Tensor, templates: Sequence[Sequence[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Split a received buffer into tensors shaped like the templates (views, no copy)."""
    out: list[list[torch.Tensor]] = []
    offset = 0
    for msg in templates:
        tensors = []
        for t in msg:
            n = _nbytes(t)
            tensors.append(buf[offset : offset + n].view(t.dtype).view(t.shape))
            offset += _padded(n)
        out.append(tensors)
    return out


class Transport:
    """Moves tensors between silos; one instance per rank."""

    def __init__(self, placement: Placement, rank: int, device: torch.device) -> None:
        self.placement = placement
        self.rank = rank
        self.device = device
        self.local_silos = set(placement.silos_on(rank))
        self.bytes_by_edge: Counter[Key] = Counter()  # payload bytes sent, per (src, dst) edge
        self.network_bytes = 0  # bytes this rank actually put on the wire

    def is_local(self, silo: int) -> bool:
        return silo in self.local_silos

    def exchange(
        self,
        outgoing: Mapping[Key, Sequence[torch.Tensor]],
        incoming: Mapping[Key, Sequence[torch.Tensor]],
    ) -> dict[Key, list[torch.Tensor]]:
        """Deliver ``outgoing[(src, dst)]`` to ``dst`` and return what this rank's silos receive.

        Every rank calls this in the same step. ``incoming`` lists the messages this rank's silos
        expect, each with template tensors (shape and dtype) of what will arrive; templates of
        messages between co-located silos are ignored. Received tensors are fresh: changing them
        never changes the sender's tensors.
        """
        for src, dst in outgoing:
            if not self.is_local(src):
                raise ValueError(f"silo {src} is not on rank {self.rank}; it cannot send from here")
        for src, dst in incoming:
            if not self.is_local(dst):
                raise ValueError(f"silo {dst} is not on rank {self.rank}; it cannot receive here")

        received: dict[Key, list[torch.Tensor]] = {}
        sends: dict[int, list[Key]] = {}
        for key in sorted(outgoing):
            self.bytes_by_edge[key] += message_bytes(outgoing[key])
            if self.is_local(key[1]):
                received[key] = [t.detach().clone() for t in outgoing[key]]
            else:
                sends.setdefault(self.placement.rank_of(key[1]), []).append(key)
        recvs: dict[int, list[Key]] = {}
        for key in sorted(incoming):
            if not self.is_local(key[0]):
                recvs.setdefault(self.placement.rank_of(key[0]), []).append(key)
        missing = [k for k in incoming if self.is_local(k[0]) and k not in outgoing]
        if missing:
            raise ValueError(f"messages between co-located silos were expected but not sent: {missing}")
        if not sends and not recvs:
            return received

        ops: list[dist.P2POp] = []
        recv_bufs: dict[int, torch.Tensor] = {}
        # Same peer order on every rank; one isend per peer we send to, one irecv per peer we
        # hear from: each of our ops has exactly one counterpart on the peer.
        for peer in sorted(set(sends) | set(recvs)):
            if peer in sends:
                buf = pack([outgoing[k] for k in sends[peer]], self.device)
                self.network_bytes += buf.numel()
                ops.append(dist.P2POp(dist.isend, buf, peer))
            if peer in recvs:
                size = sum(_padded(_nbytes(t)) for k in recvs[peer] for t in incoming[k])
                recv_bufs[peer] = torch.empty(size, dtype=torch.uint8, device=self.device)
                ops.append(dist.P2POp(dist.irecv, recv_bufs[peer], peer))
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        for peer, keys in recvs.items():
            for key, tensors in zip(keys, unpack(recv_bufs[peer], [incoming[k] for k in keys])):
                received[key] = tensors
        return received

    def take_bytes(self) -> dict[Key, int]:
        """Bytes per edge since the last call (and reset): the per-round traffic record."""
        out = dict(self.bytes_by_edge)
        self.bytes_by_edge.clear()
        return out


def weighted_average(
    states: Mapping[int, Sequence[torch.Tensor]],
    weights: Mapping[int, float],
    device: torch.device,
) -> list[torch.Tensor]:
    """Θ = Σ w_i θ_i / Σ w_i over every silo of every rank, by one ``all_reduce``.

    ``states`` holds this rank's silos (tensors in the same order everywhere); the sum is taken in
    float64 so the result does not depend on how silos are spread over ranks. Integer tensors
    (e.g. BatchNorm's step counter) are rounded back.
    """
    if not states:
        raise ValueError("every rank must host at least one silo")
    template = next(iter(states.values()))
    sizes = [t.numel() for t in template]
    acc = torch.zeros(sum(sizes) + 1, dtype=torch.float64, device=device)
    for silo, tensors in states.items():
        w = float(weights[silo])
        if w == 0.0:
            continue
        acc[:-1] += w * torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        acc[-1] += w
    if dist.is_initialized():
        dist.all_reduce(acc)
    total = acc[-1].item()
    if total <= 0:
        raise ValueError("no silo contributes to the aggregate (every accumulation status is 0)")
    mean = acc[:-1] / total
    out = []
    for t, chunk in zip(template, mean.split(sizes)):
        chunk = chunk.view(t.shape)
        if not t.is_floating_point():
            chunk = chunk.round()
        out.append(chunk.to(t.dtype))
    return out
