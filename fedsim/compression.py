"""Update compression: the codec that model messages pass through on their way between silos, so
that ``bytes_sent``, ``bytes_by_dst`` and the simulated network clock see the coded size.

What travels (``compression.kind`` other than ``none``) is a model's **change**, never its raw
weights: the difference between the tensors a silo sends and a reference both ends of the link
already hold, coded per tensor (floating tensors only; integer buffers travel raw).

* **Silo to silo** (gossip, FedEFM, the released rule; :class:`LinkCoder` inside
  :class:`fedsim.transport.Transport`): each directed link and channel (``model``, ``expert``)
  keeps the receiver's reconstruction of the last message, starting from the run's common
  initial model. With ``error_feedback: true`` the difference is taken against that
  reconstruction, so whatever an earlier message dropped is sent again later (the residual is fed
  back); with ``false`` it is taken against the sender's own previous state, and what a message
  dropped is lost (the receiver's copy drifts).
* **Through the CFL server** (FedAvg, FedProx, MOON, FedDF, FedEFM in CFL; :class:`ServerCoder`,
  used by :meth:`fedsim.federation.Federation.upload_to_server`): each silo uploads its update
  θ_i − Θ̂ against the Θ̂ every silo started the round from, plus its error-feedback residual; the
  server sends back the change of Θ with a residual of its own.

Both ends run the same arithmetic on the same values, so the receiver's copy is bit-identical to
the sender's and a co-located hand-off goes through the codec exactly like a message between ranks:
results do not depend on placement. Codecs (per tensor):

=========  ====================================================  ==========================
kind       wire                                                  bytes per tensor of n
=========  ====================================================  ==========================
fp16       IEEE half (values beyond ±65504 saturate)             2 n
bf16       bfloat16                                              2 n
int8       symmetric linear quantisation, scale = max|x| / 127   n + 4 (the float32 scale)
topk       the k = ⌈ratio · n⌉ largest |x| as float32 values      8 k
           + int32 indices
=========  ====================================================  ==========================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from fedsim.config.compression import CODEC_KINDS as CODEC_KINDS  # what fedsim list names
from fedsim.config.compression import CompressionConfig
from fedsim.transport import message_bytes


class Codec:
    """Codes one floating tensor as a few wire tensors and back."""

    kind = ""

    def encode(self, t: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def decode(self, wire: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def wire_like(self, like: torch.Tensor) -> list[torch.Tensor]:
        """Empty tensors with the shapes and dtypes ``encode`` gives for a tensor like ``like``
        (what a receiving rank posts its buffer for)."""
        raise NotImplementedError


class CastCodec(Codec):
    """fp16 / bf16: every value cast to a 16-bit float."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.dtype = torch.float16 if kind == "fp16" else torch.bfloat16

    def encode(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.dtype == torch.float16:  # saturate instead of overflowing to ±inf
            t = t.clamp(-65504.0, 65504.0)
        return [t.to(self.dtype)]

    def decode(self, wire: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        return wire[0].to(like.dtype).view(like.shape)

    def wire_like(self, like: torch.Tensor) -> list[torch.Tensor]:
        return [torch.empty(like.shape, dtype=self.dtype, device=like.device)]


class Int8Codec(Codec):
    """Symmetric per-tensor int8: q = round(x / s) with s = max|x| / 127; error ≤ s / 2 per value."""

    kind = "int8"

    def encode(self, t: torch.Tensor) -> list[torch.Tensor]:
        absmax = t.detach().abs().max().to(torch.float32) if t.numel() else torch.zeros((), device=t.device)
        scale = (absmax / 127.0).reshape(1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero tensor codes as zeros
        q = torch.round(t.to(torch.float32) / safe).clamp_(-127, 127).to(torch.int8)
        return [q, scale]

    def decode(self, wire: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        q, scale = wire
        return (q.to(torch.float32) * scale).to(like.dtype).view(like.shape)

    def wire_like(self, like: torch.Tensor) -> list[torch.Tensor]:
        return [torch.empty(like.shape, dtype=torch.int8, device=like.device),
                torch.empty(1, dtype=torch.float32, device=like.device)]


def topk_count(numel: int, ratio: float) -> int:
    """k = ⌈ratio · n⌉, at least 1 and at most n (rounded first so 0.1 · 10 is 1, not 2)."""
    return max(1, min(numel, math.ceil(round(ratio * numel, 9))))


class TopKCodec(Codec):
    """The k = ⌈ratio · n⌉ entries of largest magnitude, as (float32 values, int32 indices)."""

    kind = "topk"

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def encode(self, t: torch.Tensor) -> list[torch.Tensor]:
        flat = t.detach().reshape(-1)
        k = topk_count(flat.numel(), self.ratio)
        idx = torch.topk(flat.abs(), k, sorted=False).indices.sort().values  # canonical order on the wire
        return [flat[idx].to(torch.float32), idx.to(torch.int32)]

    def decode(self, wire: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        values, idx = wire
        out = torch.zeros(like.numel(), dtype=like.dtype, device=like.device)
        out[idx.long()] = values.to(like.dtype)
        return out.view(like.shape)

    def wire_like(self, like: torch.Tensor) -> list[torch.Tensor]:
        k = topk_count(like.numel(), self.ratio)
        return [torch.empty(k, dtype=torch.float32, device=like.device),
                torch.empty(k, dtype=torch.int32, device=like.device)]


def build_codec(cfg: CompressionConfig) -> Codec | None:
    """The codec of ``compression.kind`` (None for ``none``)."""
    if cfg.kind == "none":
        return None
    if cfg.kind in ("fp16", "bf16"):
        return CastCodec(cfg.kind)
    if cfg.kind == "int8":
        return Int8Codec()
    return TopKCodec(cfg.ratio)


# -- messages: a list of tensors (one model state) -------------------------------------------------

def encode_message(codec: Codec, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The wire tensors of a message: each floating tensor coded, integer tensors raw."""
    wire: list[torch.Tensor] = []
    for t in tensors:
        wire.extend(codec.encode(t) if t.is_floating_point() else [t.detach()])
    return wire


def decode_message(codec: Codec, wire: Sequence[torch.Tensor], template: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors a message decodes to (shaped like ``template``)."""
    out, at = [], 0
    for t in template:
        n = len(codec.wire_like(t)) if t.is_floating_point() else 1
        part = wire[at:at + n]
        at += n
        out.append(codec.decode(part, t) if t.is_floating_point() else part[0])
    return out


def wire_template(codec: Codec, template: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Receive templates of the wire tensors of a message shaped like ``template``."""
    wire: list[torch.Tensor] = []
    for t in template:
        wire.extend(codec.wire_like(t) if t.is_floating_point() else [t])
    return wire


def wire_bytes(codec: Codec | None, template: Sequence[torch.Tensor]) -> int:
    """Bytes of one coded message shaped like ``template`` (uncoded without a codec)."""
    return message_bytes(template if codec is None else wire_template(codec, template))


def _clone(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


class LinkCoder:
    """Delta coding of silo-to-silo messages against a per-link reference (module docstring).

    One per rank. ``tx`` holds, for links whose sender is here, the receiver's reconstruction (and
    without error feedback the sender's last state); ``rx`` holds, for links whose receiver is
    here, the reconstruction itself. A co-located link has both, kept apart and always equal."""

    def __init__(self, codec: Codec, error_feedback: bool, initial: Sequence[torch.Tensor]) -> None:
        self.codec = codec
        self.error_feedback = error_feedback
        self.initial = _clone(initial)  # the run's common initial model: every link's first reference
        self.tx: dict[tuple, dict[str, list[torch.Tensor]]] = {}
        self.rx: dict[tuple, list[torch.Tensor]] = {}

    def _check(self, tensors: Sequence[torch.Tensor], link: tuple) -> None:
        if len(tensors) != len(self.initial) or any(a.shape != b.shape for a, b in zip(tensors, self.initial)):
            raise ValueError(f"link {link}: compression codes model-shaped messages only")

    def encode(self, link: tuple, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The wire tensors of ``tensors`` sent on ``link`` (src, dst, channel)."""
        self._check(tensors, link)
        state = self.tx.get(link) or {"ref": self.initial, "last": self.initial}
        base = state["ref"] if self.error_feedback else state["last"]
        delta = [x.detach() - b if x.is_floating_point() else x.detach() for x, b in zip(tensors, base)]
        wire = encode_message(self.codec, delta)
        state = {"ref": self._apply(state["ref"], decode_message(self.codec, wire, self.initial))}
        if not self.error_feedback:
            state["last"] = _clone(tensors)
        self.tx[link] = state
        return wire

    def decode(self, link: tuple, wire: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The receiver's new reconstruction of ``link`` from its wire tensors (read-only)."""
        ref = self.rx.get(link, self.initial)
        self.rx[link] = self._apply(ref, decode_message(self.codec, wire, self.initial))
        return self.rx[link]

    @staticmethod
    def _apply(ref: Sequence[torch.Tensor], delta: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        # out of place: a message already handed to an algorithm stays as it was received
        return [r + d if r.is_floating_point() else d.clone() for r, d in zip(ref, delta)]

    def wire_template(self) -> list[torch.Tensor]:
        return wire_template(self.codec, self.initial)

    def silo_state(self, silo: int) -> dict[str, Any]:
        """The link states silo ``silo``'s checkpoint keeps: its outgoing links' sender side and
        its incoming links' receiver side."""
        return {"tx": {k: v for k, v in self.tx.items() if k[0] == silo},
                "rx": {k: v for k, v in self.rx.items() if k[1] == silo}}

    def load_silo_state(self, state: dict[str, Any], device: torch.device) -> None:
        for k, v in state.get("tx", {}).items():
            self.tx[k] = {name: [t.to(device) for t in ts] for name, ts in v.items()}
        for k, v in state.get("rx", {}).items():
            self.rx[k] = [t.to(device) for t in v]


class ServerCoder:
    """Coding of the CFL server's traffic: updates up (a residual per silo), the change of Θ down
    (the server's residual); see the module docstring."""

    def __init__(self, codec: Codec, error_feedback: bool) -> None:
        self.codec = codec
        self.error_feedback = error_feedback
        self.residual_up: dict[int, list[torch.Tensor]] = {}
        self.residual_down: list[torch.Tensor] | None = None

    def _code(self, update: Sequence[torch.Tensor], residual: list[torch.Tensor] | None
              ) -> tuple[list[torch.Tensor], int, list[torch.Tensor] | None]:
        sent = [u + r if u.is_floating_point() else u for u, r in zip(update, residual)] if residual else list(update)
        wire = encode_message(self.codec, sent)
        decoded = decode_message(self.codec, wire, sent)
        left = [s - d if s.is_floating_point() else torch.zeros_like(s) for s, d in zip(sent, decoded)] \
            if self.error_feedback else None
        return decoded, message_bytes(wire), left

    def upload(self, silo: int, update: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
        """(what the server decodes of silo ``silo``'s update, bytes on the wire)."""
        decoded, nbytes, left = self._code(update, self.residual_up.get(silo))
        if left is not None:
            self.residual_up[silo] = left
        return decoded, nbytes

    def download(self, change: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
        """(the change of Θ every silo decodes, bytes per silo on the wire)."""
        decoded, nbytes, left = self._code(change, self.residual_down)
        if left is not None:
            self.residual_down = left
        return decoded, nbytes

    def silo_state(self, silo: int) -> dict[str, Any]:
        return {"up": self.residual_up.get(silo), "down": self.residual_down}

    def load_silo_state(self, silo: int, state: dict[str, Any], device: torch.device) -> None:
        if state.get("up") is not None:
            self.residual_up[silo] = [t.to(device) for t in state["up"]]
        if state.get("down") is not None:
            self.residual_down = [t.to(device) for t in state["down"]]
