"""Silo-level messaging on top of torch.distributed.

Algorithms say "send these tensors from silo j to silo i"; the transport decides whether that
is a local hand-off (both silos on this rank) or a point-to-point message. Each message travels
as one flat contiguous byte buffer (the model's own storage when the model is flat, see
:func:`flatten_state`), posted with ``batch_isend_irecv`` so each send is matched by exactly
one receive on the peer. Every message
is counted in bytes per (src, dst) silo edge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

from fedsim.distributed import Placement

Key = tuple[int, int]  # (sending silo, receiving silo)
SERVER = -1  # the data-less CFL server, as an endpoint in per-edge byte records
_ALIGN = 16  # pad every tensor's bytes so each unpacked view is aligned for its dtype


def _nbytes(t: torch.Tensor) -> int:
    return t.nbytes


def _padded(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _tag(key: Key) -> int:
    """A per-edge tag so a mismatched pattern fails loudly instead of crossing messages
    (gloo honours tags; NCCL ignores them and relies on the posting order)."""
    return (key[0] * 1_000_003 + key[1]) % (2**31 - 1)


def message_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Payload size of one message (what is counted per edge)."""
    return sum(t.nbytes for t in tensors)


def _flat_view(tensors: Sequence[torch.Tensor], total: int) -> torch.Tensor | None:
    """The storage behind ``tensors`` as one uint8 buffer, when they already lie in it in wire
    layout (a model made flat by :func:`flatten_state`): then a message needs no copy."""
    if not tensors:
        return None
    storage = tensors[0].untyped_storage()
    if storage.nbytes() != total:
        return None
    base, offset = storage.data_ptr(), 0
    for t in tensors:
        if not t.is_contiguous() or t.untyped_storage().data_ptr() != base or t.data_ptr() - base != offset:
            return None
        offset += _padded(_nbytes(t))
    return torch.empty(0, dtype=torch.uint8, device=tensors[0].device).set_(storage)


def flatten_state(model: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter and buffer of ``model`` into one contiguous byte buffer laid out as
    on the wire, so sending the model's state is a single zero-copy message. Call before an
    optimiser is created (parameters keep their identity, only their storage moves).

    Each tensor is placed on the shared storage with ``set_``, not as a view of the buffer: a
    view shares its base's autograd version counter, so BatchNorm's in-place running-statistics
    update in one layer would invalidate the statistics another layer saved for backward."""
    entries = list(model.state_dict(keep_vars=True).items())
    if len({t.data_ptr() for _, t in entries}) != len(entries):
        return model  # tied weights: keep them tied rather than flat
    total = sum(_padded(_nbytes(t)) for _, t in entries)
    device = entries[0][1].device if entries else torch.device("cpu")
    buf = torch.zeros(total, dtype=torch.uint8, device=device)
    offset = 0
    with torch.no_grad():
        for name, t in entries:
            assert offset % t.element_size() == 0  # _padded keeps every tensor aligned
            view = torch.empty(0, dtype=t.dtype, device=device).set_(
                buf.untyped_storage(), offset // t.element_size(), t.shape)
            view.copy_(t)
            module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(t, torch.nn.Parameter):
                t.data = view
            else:
                module._buffers[leaf] = view
            offset += _padded(_nbytes(t))
    return model


def saveable_state(model: torch.nn.Module, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor in storage of its own, on ``device``: the tensors
    of a flat model share one storage, which ``torch.save`` refuses when their dtypes differ."""
    return {k: v.detach().to(device, copy=True) for k, v in model.state_dict().items()}


def pack(messages: Sequence[Sequence[torch.Tensor]], device: torch.device) -> torch.Tensor:
    """The raw bytes of every tensor of every message in one uint8 buffer (no copy when the
    single message is a flat model state)."""
    total = sum(_padded(_nbytes(t)) for msg in messages for t in msg)
    if len(messages) == 1:
        flat = _flat_view(messages[0], total)
        if flat is not None:
            return flat
    buf = torch.zeros(total, dtype=torch.uint8, device=device)  # zeros: padding is deterministic
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

    def __init__(self, placement: Placement, rank: int, device: torch.device, coder=None) -> None:
        self.placement = placement
        self.rank = rank
        self.device = device
        #: the compression codec of silo-to-silo messages (``fedsim.compression.LinkCoder``), or None
        self.coder = coder
        self.local_silos = set(placement.silos_on(rank))
        self.bytes_by_edge: Counter[Key] = Counter()  # payload bytes sent, per (src, dst) edge
        #: payload bytes this rank's silos received since the last take, per (src, dst): what the
        #: CFL server delivers to them when it relays (booked where the receiver lives)
        self.bytes_received: Counter[Key] = Counter()
        self.network_bytes = 0  # bytes this rank actually put on the wire

    def is_local(self, silo: int) -> bool:
        return silo in self.local_silos

    def exchange(
        self,
        outgoing: Mapping[Key, Sequence[torch.Tensor]],
        incoming: Mapping[Key, Sequence[torch.Tensor]],
        channel: str = "model",
    ) -> dict[Key, list[torch.Tensor]]:
        """Deliver ``outgoing[(src, dst)]`` to ``dst`` and return what this rank's silos receive.

        Every rank calls this in the same step. ``incoming`` lists the messages this rank's silos
        expect, each with template tensors (shape and dtype) of what will arrive; templates of
        messages between co-located silos are ignored.

        A message between co-located silos is handed over without a copy: the receiver gets the
        sender's tensors. Received tensors are therefore read-only, and a sender must not change
        its state until every receiver has used the message (algorithms exchange, then compute
        every update, then write) — exactly the semantics of a message already on the wire.

        With a codec (``compression.kind``) every message — co-located or not — is coded against
        the reference of its link and ``channel`` (:class:`fedsim.compression.LinkCoder`), what is
        counted and sent is the coded message, and the receiver gets its reconstruction.
        """
        for src, _dst in outgoing:
            if not self.is_local(src):
                raise ValueError(f"silo {src} is not on rank {self.rank}; it cannot send from here")
        for _src, dst in incoming:
            if not self.is_local(dst):
                raise ValueError(f"silo {dst} is not on rank {self.rank}; it cannot receive here")

        coder = self.coder
        if coder is not None:  # code every message here, so the same bytes travel wherever the silos live
            outgoing = {key: coder.encode((*key, channel), outgoing[key]) for key in sorted(outgoing)}
            incoming = {key: coder.wire_template() for key in incoming}
        received: dict[Key, list[torch.Tensor]] = {}
        sends: dict[int, list[Key]] = {}
        for key in sorted(outgoing):
            self.bytes_by_edge[key] += message_bytes(outgoing[key])
            if self.is_local(key[1]):
                received[key] = [t.detach() for t in outgoing[key]]
            else:
                sends.setdefault(self.placement.rank_of(key[1]), []).append(key)
        recvs: dict[int, list[Key]] = {}
        for key in sorted(incoming):
            if not self.is_local(key[0]):
                recvs.setdefault(self.placement.rank_of(key[0]), []).append(key)
        missing = [k for k in incoming if self.is_local(k[0]) and k not in outgoing]
        if missing:
            raise ValueError(f"messages between co-located silos were expected but not sent: {missing}")
        for key in incoming:
            self.bytes_received[key] += message_bytes(outgoing[key] if self.is_local(key[0]) else incoming[key])
        if sends or recvs:
            received.update(self._post(outgoing, incoming, sends, recvs))
        if coder is not None:
            received = {key: coder.decode((*key, channel), wire) for key, wire in sorted(received.items())}
        return received

    def _post(self, outgoing: Mapping[Key, Sequence[torch.Tensor]], incoming: Mapping[Key, Sequence[torch.Tensor]],
              sends: dict[int, list[Key]], recvs: dict[int, list[Key]]) -> dict[Key, list[torch.Tensor]]:
        """The point-to-point part of :meth:`exchange`: post every send and receive, wait, unpack."""
        received: dict[Key, list[torch.Tensor]] = {}
        ops: list[dist.P2POp] = []
        recv_bufs: dict[Key, torch.Tensor] = {}
        # One buffer per message, posted in the same (peer, key) order on both ends: the k-th
        # send to a peer meets the k-th receive there. A flat model state goes without a copy.
        for peer in sorted(set(sends) | set(recvs)):
            for key in sends.get(peer, []):
                buf = pack([outgoing[key]], self.device)
                self.network_bytes += buf.numel()
                ops.append(dist.P2POp(dist.isend, buf, peer, tag=_tag(key)))
            for key in recvs.get(peer, []):
                size = sum(_padded(_nbytes(t)) for t in incoming[key])
                recv_bufs[key] = torch.empty(size, dtype=torch.uint8, device=self.device)
                ops.append(dist.P2POp(dist.irecv, recv_bufs[key], peer, tag=_tag(key)))
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        for key, buf in recv_bufs.items():
            received[key] = unpack(buf, [incoming[key]])[0]
        return received

    def book_server(self, silo: int, up: int, down: int) -> None:
        """Traffic between ``silo`` and the data-less CFL server: ``up`` bytes uploaded, ``down``
        downloaded (the all-reduce that stands in for the server is not a silo message)."""
        self.bytes_by_edge[(silo, SERVER)] += up
        self.bytes_by_edge[(SERVER, silo)] += down

    def relay_through_server(self) -> None:
        """Re-book every silo-to-silo message since the last :meth:`take_bytes` as the two hops
        it takes in CFL: i → server on the sender's rank, server → j on the receiver's (so each
        silo's record holds what it sent and what it was sent, whatever the placement)."""
        received = dict(self.bytes_received)
        for (s, _d), b in self.take_bytes().items():
            self.bytes_by_edge[(s, SERVER)] += b
        for (_s, d), b in received.items():
            self.bytes_by_edge[(SERVER, d)] += b

    def broadcast(self, tensors: Sequence[torch.Tensor], src_rank: int = 0) -> list[torch.Tensor]:
        """Rank ``src_rank``'s ``tensors`` on every rank, as one packed buffer (other ranks pass
        tensors of the same shapes and dtypes as templates). Not booked per edge: the caller
        books what the protocol sends."""
        tensors = list(tensors)
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return tensors
        buf = pack([tensors], self.device)  # on src: what is sent; elsewhere only its size is used
        if self.rank != src_rank:
            buf = torch.empty_like(buf)  # never receive into ``tensors`` (pack may return their storage)
        dist.broadcast(buf, src=src_rank)
        return tensors if self.rank == src_rank else unpack(buf, [tensors])[0]

    def take_bytes(self) -> dict[Key, int]:
        """Bytes per edge since the last call (and reset): the per-round traffic record."""
        out = dict(self.bytes_by_edge)
        self.bytes_by_edge.clear()
        self.bytes_received.clear()
        return out


def weighted_sum(
    states: Mapping[int, Sequence[torch.Tensor]],
    weights: Mapping[int, float],
    device: torch.device,
    template: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, float]:
    """(Σ w_i θ_i flattened in float64, Σ w_i) over every silo of every rank, by one ``all_reduce``.

    ``states`` holds this rank's silos (tensors in the same order everywhere); the sum is taken in
    float64 so the result does not depend on how silos are spread over ranks. A rank whose silos
    all sit the round out passes no state and a ``template`` of the shapes.
    """
    if not states and template is None:
        raise ValueError("every rank must host at least one silo")
    template = next(iter(states.values())) if states else template
    acc = torch.zeros(sum(t.numel() for t in template) + 1, dtype=torch.float64, device=device)
    for silo, tensors in states.items():
        w = float(weights[silo])
        if w == 0.0:
            continue
        acc[:-1] += w * torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        acc[-1] += w
    if dist.is_initialized():
        dist.all_reduce(acc)
    return acc[:-1], acc[-1].item()


def weighted_average(
    states: Mapping[int, Sequence[torch.Tensor]],
    weights: Mapping[int, float],
    device: torch.device,
    template: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Θ = Σ w_i θ_i / Σ w_i over every silo of every rank (:func:`weighted_sum`). Integer
    tensors (e.g. BatchNorm's step counter) are rounded back."""
    acc, total = weighted_sum(states, weights, device, template)
    template = next(iter(states.values())) if states else template
    sizes = [t.numel() for t in template]
    if total <= 0:
        raise ValueError("no silo contributes to the aggregate (every accumulation status is 0)")
    mean = acc / total
    out = []
    for t, chunk in zip(template, mean.split(sizes)):
        chunk = chunk.view(t.shape)
        if not t.is_floating_point():
            chunk = chunk.round()
        out.append(chunk.to(t.dtype))
    return out


def gather_states(
    states: Mapping[int, Sequence[torch.Tensor]],
    weights: Mapping[int, float],
    device: torch.device,
    template: Sequence[torch.Tensor],
    slots: int,
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Every silo's (id, weight, state flattened in float64) of every rank, on every rank, in
    silo order, by one ``all_gather``: what a rule other than the mean needs (a median is not a
    sum). ``states`` holds this rank's silos (a rank whose silos all sit out passes none);
    ``slots`` is the most silos any rank hosts. Returns (ids, weights (n), states (n × p))."""
    width = sum(t.numel() for t in template) + 2
    block = torch.zeros(slots, width, dtype=torch.float64, device=device)
    block[:, 0] = -1  # an empty slot
    for row, silo in enumerate(sorted(states)):
        block[row, 0] = silo
        block[row, 1] = float(weights[silo])
        block[row, 2:] = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in states[silo]])
    if dist.is_initialized() and dist.get_world_size() > 1:
        parts = [torch.empty_like(block) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, block)
        block = torch.cat(parts)
    block = block[block[:, 0] >= 0]
    block = block[block[:, 0].argsort()]
    return [int(i) for i in block[:, 0].tolist()], block[:, 1], block[:, 2:]
