"""Models: foundation backbones, a U-Net segmenter whose encoder loads foundation weights,
torchvision classifiers for heterogeneous silos, and Python plug-ins (``model.name`` =
``"package.module:factory"``, see :mod:`fedsim.models.plugin`). No pretrained weights are ever
downloaded.

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
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fedsim.errors import ConfigError
from fedsim.plugins import is_import_path
from fedsim.settings import Range, section_from_dict

from .backbones import R50ViT, SmallCNN, TorchvisionNet, conv_block, norm_layer

__all__ = [
    "MODEL_NAMES", "ModelConfig", "UNet", "build_model", "build_segmenter", "count_parameters",
    "features_of", "logits_and_features", "representation",
]

MODEL_NAMES = ("cnn", "resnet10", "resnet12", "resnet18", "resnet50", "r50-vit", "shufflenet", "mobilenetv2")


@dataclass
class ModelConfig:
    """A network: the experiment YAML ``model:`` section (and the teacher's, ``fminit.teacher``)."""

    name: str = "cnn"         # a built-in name, or a plug-in "package.module:factory"
    args: dict = field(default_factory=dict)  # plug-in: keyword arguments of the factory
    features_layer: str | None = None  # plug-in: submodule whose output is the dense feature map
    width: Annotated[int, Range(ge=4)] = 16  # base channels for "cnn" and "r50-vit"
    norm: Literal["group", "batch"] = "group"  # GroupNorm or BatchNorm in cnn, resnets, mobilenetv2, r50-vit
    norm_groups: Annotated[int, Range(ge=0)] = 0  # GroupNorm groups; 0 = one channel per group (fastest to train here)
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0  # before the classifier of "cnn"
    vit_depth: Annotated[int, Range(ge=1)] = 2  # r50-vit transformer layers
    vit_dim: Annotated[int, Range(ge=4)] = 128  # r50-vit token width
    vit_heads: Annotated[int, Range(ge=1)] = 4  # r50-vit attention heads (vit_dim a multiple of 4 · vit_heads)
    width_mult: Annotated[float, Range(gt=0)] = 0.5  # mobilenetv2 width multiplier
    decoder_width: Annotated[int, Range(ge=0)] = 0  # U-Net decoder channels per level; 0 = same as the encoder skip
    # heterogeneous models: architectures given to the silos round-robin (silo i gets
    # per_silo[i % len]); only for algorithms that exchange outputs, not weights (fedmd, mdhfl)
    per_silo: list = field(default_factory=list)

    def validate(self) -> None:
        for name in [self.name, *self.per_silo]:
            if is_import_path(name):
                from fedsim.plugins import resolve

                resolve(name, "model.name" if name == self.name else "model.per_silo")
            elif not isinstance(name, str) or name.lower() not in MODEL_NAMES:
                raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)} or give a plug-in "
                                  "as 'package.module:factory'")
        if not isinstance(self.args, dict):
            raise ConfigError(f"model.args must be a mapping of keyword arguments, got {self.args!r}")

    @property
    def plugin(self) -> bool:
        """Whether the model (or one of ``per_silo``) comes from a Python plug-in."""
        return any(is_import_path(n) for n in [self.name, *self.per_silo])

    @property
    def heterogeneous(self) -> bool:
        return len({n if is_import_path(n) else n.lower() for n in self.per_silo}) > 1

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
    """The logits and the dense feature map (B, C, h, w): one forward pass for the built-in
    models, plug-ins with ``features`` + ``head`` and plug-ins with ``model.features_layer``; a
    plug-in with only ``features(x)`` runs twice."""
    from .plugin import feature_tap

    tap = feature_tap(model)
    if tap is not None:
        return model(x), tap.take()
    if callable(getattr(model, "head", None)):
        feats = model.features(x)
        return model.head(feats), feats
    return model(x), model.features(x)


def features_of(model: nn.Module, x: Tensor) -> Tensor:
    """The dense feature map of ``x`` (``features(x)``, or the hooked ``model.features_layer``)."""
    from .plugin import feature_tap

    tap = feature_tap(model)
    if tap is not None:
        model(x)
        return tap.take()
    return model.features(x)


def representation(feats: Tensor) -> Tensor:
    """A feature map (B, C, h, w) pooled to one vector per sample (B, C); (B, C) stays."""
    return feats.mean(dim=(2, 3)) if feats.dim() == 4 else feats.flatten(1)


def _norm_fn(cfg: ModelConfig):
    return partial(norm_layer, cfg.norm, groups=cfg.norm_groups)


def build_model(cfg: ModelConfig | None = None, num_classes: int = 6, in_channels: int = 1) -> nn.Module:
    """A classifier with the backbone interface (randomly initialised, deterministic under
    ``torch.manual_seed``)."""
    cfg = cfg or ModelConfig()
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    if is_import_path(cfg.name):
        from .plugin import build_plugin_model

        return build_plugin_model(cfg, num_classes, in_channels)
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
    # torchvision only now: importing its models costs ~170 MB of memory per rank
    import torchvision.models as tvm
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

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
    and the gap sinks into the seed noise — docs/downstream.md)."""

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
    if is_import_path(encoder_cfg.name):
        raise ConfigError(f"model {encoder_cfg.name}: a U-Net needs a built-in encoder (its skip maps); "
                          f"segmentation runs with {', '.join(MODEL_NAMES)}")
    encoder = build_model(encoder_cfg, num_classes=1, in_channels=in_channels)
    return UNet(encoder, num_seg_classes, in_channels, encoder_cfg.norm, encoder_cfg.decoder_width, raw_branch)
