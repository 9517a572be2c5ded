"""The fine-tuning loops: Adam on seeded mini-batches, and the segmentation recipe (the decoder warms
up on the frozen encoder, then the whole U-Net trains with the encoder at its own rate)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from fedsim.config.downstream import DownstreamConfig
from fedsim.losses import segmentation_loss
from fedsim.optim import Adam


def index_batches(n: int, batch_size: int, steps: int, g: torch.Generator):
    """``steps`` index batches: reshuffled passes over range(n) driven by ``g``."""
    perm, pos = torch.randperm(n, generator=g), 0
    bs = min(batch_size, n)
    for _ in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos:pos + bs]
        pos += bs


def fit(model: nn.Module, x_all: torch.Tensor, targets, steps: int, batch_size: int, lr: float,
        batch_seed: int, loss_fn) -> list[float]:
    """Adam on seeded mini-batches: ``steps`` steps of ``loss_fn(model(x), *targets[idx])``
    (``targets`` one tensor or a tuple of tensors indexed like ``x_all``); the loss of every step."""
    targets = targets if isinstance(targets, tuple) else (targets,)
    opt = Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(batch_seed)
    losses = []
    model.train()
    for idx in index_batches(len(x_all), batch_size, steps, g):
        loss = loss_fn(model(x_all[idx]), *(t[idx] for t in targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def fit_classifier(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, ds_cfg: DownstreamConfig,
                   batch_seed: int, loss_fn) -> list[float]:
    """:func:`fit` for the configured classification steps/epochs."""
    return fit(model, x_all, y_all, ds_cfg.num_steps(), ds_cfg.batch_size, ds_cfg.lr, batch_seed, loss_fn)


def fit_segmenter(unet: nn.Module, x_all: torch.Tensor, masks: torch.Tensor, ds_cfg: DownstreamConfig,
                  batch_seed: int) -> list[float]:
    """The segmentation recipe: ``seg_warmup_steps`` Adam steps on the decoder alone (encoder
    frozen, in eval mode so BatchNorm statistics stay Θ's), then ``seg_steps`` on the whole U-Net
    with the encoder at ``seg_encoder_lr`` (0: it stays frozen); one batch stream for both phases.
    Returns the loss of every step.

    Why a warm-up: a fresh decoder's first gradients are large and random; sent into a pretrained
    encoder they overwrite what it knows before the decoder has learnt to use it (linear-probe then
    fine-tune, Kumar et al. 2022). The smaller encoder rate keeps it near Θ once it trains.
    ``seg_schedule: cosine`` scales every group's rate by ½(1 + cos(π t / T)) at step t of T."""
    encoder = unet.encoder
    enc_params = list(encoder.parameters())
    enc_ids = {id(p) for p in enc_params}
    opt = Adam([p for p in unet.parameters() if id(p) not in enc_ids], lr=ds_cfg.seg_lr)
    warmup = ds_cfg.seg_warmup_steps
    total = warmup + ds_cfg.seg_steps
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    g = torch.Generator().manual_seed(batch_seed)
    losses: list[float] = []
    unet.train()
    encoder.eval()
    for p in enc_params:
        p.requires_grad_(False)
    try:
        for step, idx in enumerate(index_batches(len(x_all), ds_cfg.seg_batch_size, total, g)):
            if step == warmup and ds_cfg.seg_encoder_lr > 0:
                for p in enc_params:
                    p.requires_grad_(True)
                encoder.train()
                opt.add_param_group({"params": enc_params, "lr": ds_cfg.seg_encoder_lr,
                                     "base_lr": ds_cfg.seg_encoder_lr})
            if ds_cfg.seg_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * 0.5 * (1.0 + math.cos(math.pi * step / total))
            loss = segmentation_loss(unet(x_all[idx]), masks[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        for p in enc_params:
            p.requires_grad_(True)
    return losses
