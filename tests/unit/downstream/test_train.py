"""The segmentation recipe (``train.py``): the warm-up really freezes the encoder (BatchNorm
statistics too), then it moves at its own rate; the cosine schedule equals a hand-written loop."""

from __future__ import annotations

import pytest
import torch

from fedsim.downstream import (
    DownstreamConfig,
    fit_segmenter,
    init_segmenter,
)
from fedsim.errors import ConfigError
from fedsim.models import ModelConfig, build_model
from tests.harness import DOWNSTREAM_MODEL, tiny_downstream


def test_warmup_freezes_the_encoder_then_it_moves_at_its_own_rate(foundation, data):
    """Warm-up only: the encoder is bit-identical to Θ, the decoder moved. One joint step from
    the start: Adam's first update moves a parameter by about its learning rate, so the encoder
    (seg_encoder_lr) moves 100x less than the decoder (seg_lr)."""
    x, m = data.train.images[:8], data.train.masks[:8]
    unet, _ = init_segmenter(foundation, DOWNSTREAM_MODEL, seed=0)
    dec0 = {k: v.clone() for k, v in unet.state_dict().items() if not k.startswith("encoder.")}
    fit_segmenter(unet, x, m, tiny_downstream(seg_warmup_steps=3, seg_steps=0), 0)
    for k, v in unet.encoder.state_dict().items():
        if not k.startswith(unet.encoder.head_prefixes):
            assert torch.equal(v, foundation[k]), k
    assert any(not torch.equal(v, dec0[k]) for k, v in unet.state_dict().items() if k in dec0)
    assert all(p.requires_grad for p in unet.parameters())  # handed back trainable
    # encoder lr 0: frozen throughout, whatever seg_steps says
    unet, _ = init_segmenter(foundation, DOWNSTREAM_MODEL, seed=0)
    fit_segmenter(unet, x, m, tiny_downstream(seg_warmup_steps=0, seg_steps=3, seg_encoder_lr=0.0), 0)
    assert all(torch.equal(v, foundation[k]) for k, v in unet.encoder.state_dict().items() if k in foundation
               and not k.startswith("fc."))

    unet, _ = init_segmenter(foundation, DOWNSTREAM_MODEL, seed=0)
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    fit_segmenter(unet, x, m, tiny_downstream(seg_warmup_steps=0, seg_steps=1, seg_lr=1e-2, seg_encoder_lr=1e-4), 0)
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in unet.named_parameters()}
    enc = [v for n, v in moved.items() if n.startswith("encoder.") and not n.startswith("encoder.fc.")]
    dec = [v for n, v in moved.items() if not n.startswith("encoder.")]
    assert max(enc) == pytest.approx(1e-4, rel=0.05) and max(dec) == pytest.approx(1e-2, rel=0.05)


def test_warmup_keeps_batchnorm_statistics_of_the_foundation(data):
    cfg = ModelConfig(width=8, norm="batch")
    torch.manual_seed(3)
    sd = build_model(cfg, num_classes=6).state_dict()
    sd = {k: (v + 0.5 if k.endswith("running_mean") else v) for k, v in sd.items()}
    unet, _ = init_segmenter(sd, cfg, seed=0)
    fit_segmenter(unet, data.train.images[:8], data.train.masks[:8], tiny_downstream(seg_warmup_steps=3, seg_steps=0), 0)
    for k, v in unet.encoder.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            assert torch.equal(v, sd[k]), k


def test_cosine_schedule_matches_a_hand_written_loop(foundation, data):
    """``seg_schedule: cosine``: the same U-Net trained by an explicit loop — decoder alone for the
    warm-up, then the encoder joins at its own rate, every group at base·½(1 + cos(π t / T)) —
    ends with the same weights; the constant schedule does not."""
    import math as _m

    from fedsim.downstream.train import index_batches
    from fedsim.losses import segmentation_loss

    ds = tiny_downstream(seg_warmup_steps=2, seg_steps=3, seg_lr=1e-2, seg_encoder_lr=1e-3, seg_schedule="cosine")
    x, m = data.train.images[:8], data.train.masks[:8]
    unet, _ = init_segmenter(foundation, DOWNSTREAM_MODEL, seed=0)
    fit_segmenter(unet, x, m, ds, 7)

    ref, _ = init_segmenter(foundation, DOWNSTREAM_MODEL, seed=0)
    enc = list(ref.encoder.parameters())
    dec = [p for n, p in ref.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.Adam(dec, lr=1e-2)
    total = 5
    ref.train()
    ref.encoder.eval()
    for p in enc:
        p.requires_grad_(False)
    for t, idx in enumerate(index_batches(8, ds.seg_batch_size, total, torch.Generator().manual_seed(7))):
        if t == 2:
            for p in enc:
                p.requires_grad_(True)
            ref.encoder.train()
            opt.add_param_group({"params": enc, "lr": 1e-3})
        f = 0.5 * (1 + _m.cos(_m.pi * t / total))
        opt.param_groups[0]["lr"] = 1e-2 * f
        if len(opt.param_groups) > 1:
            opt.param_groups[1]["lr"] = 1e-3 * f
        loss = segmentation_loss(ref(x[idx]), m[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    a, b = unet.state_dict(), ref.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    const, _ = init_segmenter(foundation, DOWNSTREAM_MODEL, seed=0)
    fit_segmenter(const, x, m, tiny_downstream(seg_warmup_steps=2, seg_steps=3, seg_lr=1e-2, seg_encoder_lr=1e-3), 7)
    assert any(not torch.allclose(const.state_dict()[k], a[k], atol=1e-6) for k in a)
    with pytest.raises(ConfigError, match="seg_schedule"):
        DownstreamConfig.from_dict({"seg_schedule": "linear"})
