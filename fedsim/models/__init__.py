"""Models: foundation backbones, a U-Net segmenter whose encoder loads foundation weights, and
torchvision classifiers for heterogeneous silos. No pretrained weights are ever downloaded.

Every model from :func:`build_model` has ``forward(x) -> logits (B, num_classes)`` and
``features(x) -> (B, C, h, w)`` (the last conv map before pooling, used by the EMD weights),
plus ``stages(x)`` (skip maps for the U-Net), ``head(f)``, ``feature_channels`` and
``head_prefixes``.

Normalization: the default is GroupNorm (``norm: group``) with one channel per group
(``norm_groups: 0``): no running statistics, so averaging, sending or distilling weights between
silos with different data is well defined and train/eval behave the same, and on the synthetic
data it reaches ~99% foundation accuracy in 2 epochs where GroupNorm with 8 groups stays near
chance; ``norm: batch`` switches to BatchNorm. ShuffleNetV2 always uses BatchNorm
(torchvision builds it that way).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fedsim.errors import ConfigError
from fedsim.settings import section_from_dict

from .backbones import R50ViT, SmallCNN, TorchvisionNet, conv_block, norm_layer

__all__ = [
    "MODEL_NAMES", "ModelConfig", "UNet", "build_model", "build_segmenter", "count_parameters",
    "logits_and_features", "representation",
]

MODEL_NAMES = ("cnn", "resnet10", "resnet12", "resnet18", "resnet50", "r50-vit", "shufflenet", "mobilenetv2")


@dataclass
class ModelConfig:
    """The experiment YAML ``model:`` section."""

    name: str = "cnn"
    width: int = 16           # base channels for "cnn" and "r50-vit"
    norm: str = "group"       # "group" | "batch" (cnn, resnets, mobilenetv2, r50-vit)
    norm_groups: int = 0      # GroupNorm groups; 0 = one channel per group (fastest to train here)
    dropout: float = 0.0      # before the classifier of "cnn"
    vit_depth: int = 2        # r50-vit transformer layers
    vit_dim: int = 128        # r50-vit token width
    vit_heads: int = 4
    width_mult: float = 0.5   # mobilenetv2 width multiplier
    decoder_width: int = 0    # U-Net decoder channels per level; 0 = same as the encoder skip
    # heterogeneous models: architectures given to the silos round-robin (silo i gets
    # per_silo[i % len]); only for algorithms that exchange outputs, not weights (fedmd, mdhfl)
    per_silo: list = field(default_factory=list)

    def validate(self) -> None:
        for name in [self.name, *self.per_silo]:
            if not isinstance(name, str) or name.lower() not in MODEL_NAMES:
                raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")

    @property
    def heterogeneous(self) -> bool:
        return len({n.lower() for n in self.per_silo}) > 1

    def for_silo(self, i: int | None) -> ModelConfig:
        """The model of silo ``i`` (``name`` when per_silo is empty; i None: the first silo's)."""
        if not self.per_silo:
            return self
        return replace(self, name=self.per_silo[(i or 0) % len(self.per_silo)], per_silo=[])

    @classmethod
    def from_dict(cls, d: dict | None) -> ModelConfig:
        return section_from_dict(cls, d, "model", ConfigError)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """One forward pass giving both the logits and the dense feature map (B, C, h, w)."""
    feats = model.features(x)
    return model.head(feats), feats


def representation(feats: Tensor) -> Tensor:
    """A feature map (B, C, h, w) pooled to one vector per sample (B, C); (B, C) stays."""
    return feats.mean(dim=(2, 3)) if feats.dim() == 4 else feats.flatten(1)


def _norm_fn(cfg: ModelConfig):
    return partial(norm_layer, cfg.norm, groups=cfg.norm_groups)


def build_model(cfg: ModelConfig | None = None, num_classes: int = 6, in_channels: int = 1) -> nn.Module:
    """A classifier with the backbone interface (randomly initialised, deterministic under
    ``torch.manual_seed``)."""
    import torchvision.models as tvm
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    cfg = cfg or ModelConfig()
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    if cfg.norm not in ("group", "batch"):
        raise ConfigError(f"model.norm must be 'group' or 'batch', got {cfg.norm!r}")
    if cfg.width < 4:
        raise ConfigError(f"model.width must be >= 4, got {cfg.width}")
    name = cfg.name.lower()
    if name == "cnn":
        return SmallCNN(num_classes, in_channels, cfg.width, cfg.norm, cfg.dropout, cfg.norm_groups)
    if name == "r50-vit":
        if cfg.vit_dim % (4 * cfg.vit_heads):
            raise ConfigError(f"model.vit_dim ({cfg.vit_dim}) must be a multiple of 4 * vit_heads")
        return R50ViT(num_classes, in_channels, cfg.width, cfg.vit_depth, cfg.vit_heads, cfg.vit_dim, cfg.norm)
    nl = _norm_fn(cfg)
    if name in ("resnet10", "resnet12", "resnet18", "resnet50"):
        block, layers = {
            "resnet10": (BasicBlock, [1, 1, 1, 1]),
            "resnet12": (BasicBlock, [1, 1, 2, 1]),
            "resnet18": (BasicBlock, [2, 2, 2, 2]),
            "resnet50": (Bottleneck, [3, 4, 6, 3]),
        }[name]
        return TorchvisionNet("resnet", ResNet(block, layers, norm_layer=nl), num_classes, in_channels)
    if name == "shufflenet":
        return TorchvisionNet("shufflenet", tvm.shufflenet_v2_x0_5(weights=None), num_classes, in_channels)
    if name == "mobilenetv2":
        return TorchvisionNet("mobilenet", tvm.MobileNetV2(width_mult=cfg.width_mult, norm_layer=nl),
                              num_classes, in_channels)
    raise ConfigError(f"unknown model.name {cfg.name!r}; choose from {', '.join(MODEL_NAMES)}")


class UNet(nn.Module):
    """U-Net: ``encoder`` is a :func:`build_model` backbone (its ``stages`` give the skips), a
    decoder upsamples with bilinear interpolation + two 3x3 convs per level, and (``raw_branch``)
    a decoder-owned full-resolution conv on the input pixels keeps thin structures (guidewires)
    sharp. Output (B, classes, H, W).

    ``raw_branch=False`` drops that conv, so every feature the decoder sees has passed through the
    encoder: the downstream benchmark uses it to measure what a foundation encoder is worth (with
    the branch, random initialization segments the devices nearly as well as a trained encoder
    and the gap sinks into the seed noise — README Downstream)."""

    def __init__(self, encoder: nn.Module, num_seg_classes: int = 3, in_channels: int = 1,
                 norm: str = "group", decoder_width: int = 0, raw_branch: bool = True):
        super().__init__()
        self.encoder = encoder
        ch = list(encoder.stage_channels)
        dec = [decoder_width or min(c, 256) for c in ch]
        self.lateral = nn.Conv2d(ch[-1], dec[-1], 1)
        ups = []
        cur = dec[-1]
        for k in range(len(ch) - 2, -1, -1):
            ups.append(nn.Sequential(conv_block(cur + ch[k], dec[k], norm), conv_block(dec[k], dec[k], norm)))
            cur = dec[k]
        self.up = nn.ModuleList(ups)
        fw = max(8, dec[0] // 2)
        self.full = conv_block(in_channels, fw, norm) if raw_branch else None
        self.final = nn.Sequential(conv_block(cur + (fw if raw_branch else 0), fw, norm),
                                   nn.Conv2d(fw, num_seg_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        skips = self.encoder.stages(x)
        h = self.lateral(skips[-1])
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.full is not None:
            h = torch.cat([h, self.full(x)], dim=1)
        return self.final(h)

    def load_foundation(self, state_dict: dict, strict: bool = False) -> int:
        """Copy every encoder tensor whose name and shape match from a :func:`build_model` state
        dict (a ``module.``/``encoder.`` prefix is stripped; classifier-head tensors are skipped).
        Returns the number of tensors loaded; ``strict`` raises if any encoder tensor is missing."""
        src = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
        if any(k.startswith(("lateral.", "up.", "final.")) for k in src):  # a segmenter's state dict
            src = {k[len("encoder."):]: v for k, v in src.items() if k.startswith("encoder.")}
        own = self.encoder.state_dict()
        heads = tuple(self.encoder.head_prefixes)
        loaded, missing = {}, []
        for k, v in own.items():
            if k.startswith(heads):
                continue
            if k in src and tuple(src[k].shape) == tuple(v.shape):
                loaded[k] = src[k].detach().to(dtype=v.dtype, device=v.device)
            else:
                missing.append(k)
        if strict and missing:
            raise ConfigError(f"foundation state dict lacks {len(missing)} encoder tensors, e.g. {missing[:3]}")
        with torch.no_grad():
            for k, v in loaded.items():
                own[k].copy_(v)
        return len(loaded)


def build_segmenter(encoder_cfg: ModelConfig | None = None, num_seg_classes: int = 3,
                    in_channels: int = 1, raw_branch: bool = True) -> UNet:
    """A U-Net whose encoder has the architecture of ``build_model(encoder_cfg)`` (``raw_branch``:
    see :class:`UNet`)."""
    encoder_cfg = encoder_cfg or ModelConfig()
    if isinstance(encoder_cfg, dict):
        encoder_cfg = ModelConfig.from_dict(encoder_cfg)
    encoder = build_model(encoder_cfg, num_classes=1, in_channels=in_channels)
    return UNet(encoder, num_seg_classes, in_channels, encoder_cfg.norm, encoder_cfg.decoder_width, raw_branch)
