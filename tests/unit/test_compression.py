"""Compression: codec round-trip bounds, top-k keeps exactly the k largest magnitudes, error
feedback delivers what earlier messages dropped, integer buffers travel raw, and compression is
refused where nothing model-shaped travels."""

from __future__ import annotations

import pytest
import torch

from fedsim.compression import (
    CompressionConfig,
    LinkCoder,
    build_codec,
    decode_message,
    encode_message,
    topk_count,
)

TINY = [
    "rounds=2", "train.local_steps=2", "train.batch_size=8", "train.eval_every=0",
    "data.samples_per_silo=32", "data.test_samples=16", "data.image_size=16", "model.width=4",
]


def _codec(kind: str, **kw):
    return build_codec(CompressionConfig(kind=kind, **kw))


def _values(n: int = 4000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.logspace(-6, 2, n)  # magnitudes over 8 decades
    return x[torch.randperm(n, generator=g)]


def test_fp16_and_bf16_round_trip_within_half_an_ulp():
    x = _values()
    for kind, mantissa in (("fp16", 10), ("bf16", 7)):
        c = _codec(kind)
        y = c.decode(c.encode(x), x)
        # round to nearest: |x − y| ≤ 2^-(m+1) |x|, plus half the smallest subnormal step for fp16
        bound = 2.0 ** -(mantissa + 1) * x.abs() + (2.0 ** -25 if kind == "fp16" else 0.0)
        assert ((x - y).abs() <= bound * (1 + 1e-6)).all(), kind
        assert (x - y).abs().max() > 0  # it is lossy: the bound is not vacuous
    big = torch.tensor([1e6, -1e6])  # beyond fp16's range: saturates, never inf
    assert _codec("fp16").decode(_codec("fp16").encode(big), big).tolist() == [65504.0, -65504.0]


def test_int8_round_trip_within_half_a_step():
    x = _values()
    c = _codec("int8")
    q, scale = c.encode(x)
    assert q.dtype == torch.int8 and scale.numel() == 1
    assert float(scale) == pytest.approx(float(x.abs().max()) / 127, rel=1e-6)
    y = c.decode([q, scale], x)
    step = float(x.abs().max()) / 127
    assert (x - y).abs().max() <= step / 2 * (1 + 1e-5)
    zeros = torch.zeros(5)
    assert c.decode(c.encode(zeros), zeros).eq(0).all()


def test_topk_keeps_exactly_the_k_largest_magnitudes():
    x = _values(1000)
    c = _codec("topk", ratio=0.05)
    values, idx = c.encode(x)
    assert len(values) == len(idx) == 50
    expected = set(x.abs().argsort(descending=True)[:50].tolist())
    assert set(idx.tolist()) == expected
    y = c.decode([values, idx], x)
    assert torch.equal(y[idx.long()], x[idx.long()]) and (y != 0).sum() == 50
    assert [topk_count(n, 0.1) for n in (1, 9, 10, 11)] == [1, 1, 1, 2]


def test_error_feedback_delivers_what_earlier_messages_dropped():
    x = [_values(100, 1), _values(7, 2)]
    init = [torch.zeros(100), torch.zeros(7)]
    for ef, expect_exact in ((True, True), (False, False)):
        tx = LinkCoder(_codec("topk", ratio=0.1), ef, init)
        rx = LinkCoder(_codec("topk", ratio=0.1), ef, init)
        for _ in range(10):  # the same state sent 10 times: k = 10 and 1 new entries per message
            got = rx.decode((0, 1, "model"), tx.encode((0, 1, "model"), x))
        # with error feedback the receiver has everything after ⌈1/ratio⌉ messages; without, it
        # only ever has the first message's entries
        assert torch.equal(got[0], x[0]) == expect_exact
        assert torch.equal(tx.tx[(0, 1, "model")]["ref"][0], got[0])  # both ends agree bit for bit


def test_compression_is_refused_where_nothing_model_shaped_travels():
    from fedsim.errors import ConfigError
    from fedsim.experiment import resolve_config

    with pytest.raises(ConfigError, match="exchanges only outputs"):
        resolve_config(None, TINY + ["algorithm=fedmd", "compare_with=[]", "downstream.enabled=false",
                                     "compression.kind=fp16"])


def test_messages_with_integer_buffers_travel_them_raw():
    c = _codec("int8")
    msg = [torch.randn(3, 4), torch.tensor(7, dtype=torch.long)]
    wire = encode_message(c, msg)
    back = decode_message(c, wire, msg)
    assert back[1].item() == 7 and wire[-1].dtype == torch.long
