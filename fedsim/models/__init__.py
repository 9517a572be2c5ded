"""Models: foundation backbones, a U-Net segmenter whose encoder loads foundation weights (its
decoder MONAI's), torchvision classifiers for heterogeneous silos, MONAI's networks
(``model.name: monai.NAME``, see :mod:`fedsim.models.monai_nets`) and Python plug-ins
(``model.name`` = ``"package.module:factory"``, see :mod:`fedsim.models.plugin`). No pretrained
weights are ever downloaded.

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

import warnings
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fedsim.config import ExperimentConfig
from fedsim.config.data import NUM_SEG_CLASSES
from fedsim.config.models import MODEL_NAMES, ModelConfig, is_monai_name
from fedsim.errors import ConfigError
from fedsim.plugins import is_import_path

from .backbones import R50ViT, SmallCNN, TorchvisionNet, conv_block, norm_layer
from .features import features_of, logits_and_features, representation
from .monai_nets import build_monai_model
from .plugin import attach_feature_tap, build_plugin_model

__all__ = [
    "MODEL_NAMES", "ModelConfig", "SEGMENTER_PREFIXES", "UNet", "apply_initial_state", "build_model", "build_segmenter", "count_parameters",
    "features_of", "initial_model_factory", "logits_and_features", "representation",
]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _norm_fn(cfg: ModelConfig):
    return partial(norm_layer, cfg.norm, groups=cfg.norm_groups)


def build_model(cfg: ModelConfig | None = None, num_classes: int = 6, in_channels: int = 1,
                image_size: int | None = None) -> nn.Module:
    """A classifier with the backbone interface (randomly initialised, deterministic under
    ``torch.manual_seed``). ``image_size``: the side of the run's images, for a network built for
    one size (``monai.ViT``); None where the data keep their own."""
    cfg = cfg or ModelConfig()
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    if is_import_path(cfg.name):
        return build_plugin_model(cfg, num_classes, in_channels)
    if is_monai_name(cfg.name):
        return attach_feature_tap(build_monai_model(cfg.name, cfg.args, num_classes, in_channels, image_size),
                                  cfg.features_layer, cfg.name)
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


# the parameter names of a U-Net's decoder: a state dict holding any is a segmenter's, whose
# ``encoder.*`` tensors are a backbone
SEGMENTER_PREFIXES = ("lateral.", "up.", "final.", "full.", "segmentation_head.")


def monai_norm(norm: str) -> tuple:
    """MONAI's name for the decoder's normalization: GroupNorm with one channel per group is
    InstanceNorm with an affine map (the same function, no running statistics); ``batch``:
    BatchNorm."""
    return ("batch", {}) if norm == "batch" else ("instance", {"affine": True})


class UNet(nn.Module):
    """U-Net: ``encoder`` is a :func:`build_model` backbone (its ``stages`` give the skips, each
    half the size of the one before); the decoder is built of MONAI's U-Net blocks — a 1x1
    ``lateral`` conv on the deepest map, then per level MONAI's ``UpCat`` (bilinear upsampling by
    2, the skip concatenated, two 3x3 conv-norm-ReLU: the decoder block of ``BasicUNet``), then at
    the input's resolution a 3x3 conv-norm-ReLU (MONAI's ``Convolution``) and MONAI's
    ``SegmentationHead`` (a 1x1 conv to the classes). With ``raw_branch`` a decoder-owned
    full-resolution conv on the input pixels is concatenated before that last conv, keeping thin
    structures (guidewires) sharp. Output (B, classes, H, W); an input whose side is not a multiple
    of the encoder's total stride is padded (replicating its edge) and the output cropped. The
    layout is the one fedsim's own decoder had, so past downstream numbers stay comparable.

    ``raw_branch=False`` drops that conv, so every feature the decoder sees has passed through the
    encoder: the downstream benchmark uses it to measure what a foundation encoder is worth (with
    the branch, random initialization segments the devices nearly as well as a trained encoder
    and the gap sinks into the seed noise — docs/downstream.md)."""

    def __init__(self, encoder: nn.Module, num_seg_classes: int = 3, in_channels: int = 1,
                 norm: str = "group", decoder_width: int = 0, raw_branch: bool = True):
        super().__init__()
        # MONAI imports all of itself (and torchvision) at once: only runs that segment pay for it
        with warnings.catch_warnings():  # its import warns about torch APIs it uses, not about ours
            warnings.simplefilter("ignore", FutureWarning)
            from monai.networks.blocks import Convolution
            from monai.networks.nets.basic_unet import UpCat
            from monai.networks.nets.flexible_unet import SegmentationHead

        self.encoder = encoder
        ch = list(encoder.stage_channels)
        dec = [decoder_width or min(c, 256) for c in ch]
        self.stride = 2 ** len(ch)
        block = dict(act=("relu", {"inplace": True}), norm=monai_norm(norm), bias=False)
        self.lateral = nn.Conv2d(ch[-1], dec[-1], 1)
        self.up = nn.ModuleList(
            UpCat(2, dec[k + 1], ch[k], dec[k], upsample="nontrainable", pre_conv=None, interp_mode="bilinear",
                  align_corners=False, halves=False, is_pad=True, **block)
            for k in range(len(ch) - 2, -1, -1))
        fw = max(8, dec[0] // 2)
        self.full = conv_block(in_channels, fw, norm) if raw_branch else None
        self.final = Convolution(2, dec[0] + (fw if raw_branch else 0), fw, padding=1, **block)
        self.segmentation_head = SegmentationHead(2, fw, num_seg_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        skips = self.encoder.stages(padded)
        out = self.lateral(skips[-1])
        for block, skip in zip(self.up, reversed(skips[:-1])):
            out = block(out, skip)
        out = F.interpolate(out, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        if self.full is not None:
            out = torch.cat([out, self.full(padded)], dim=1)
        return self.segmentation_head(self.final(out))[..., :h, :w]

    def load_foundation(self, state_dict: dict, strict: bool = False) -> int:
        """Copy every encoder tensor whose name and shape match from a :func:`build_model` state
        dict (a ``module.``/``encoder.`` prefix is stripped; classifier-head tensors are skipped).
        Returns the number of tensors loaded; ``strict`` raises if any encoder tensor is missing."""
        src = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
        if any(k.startswith(SEGMENTER_PREFIXES) for k in src):  # a segmenter's state dict
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
                    in_channels: int = 1, raw_branch: bool = True, image_size: int | None = None) -> nn.Module:
    """A U-Net whose encoder has the architecture of ``build_model(encoder_cfg)`` (``raw_branch``:
    see :class:`UNet`), or — ``model.name: monai.NAME`` — that MONAI segmentation network itself
    (``monai.BasicUNet``, ``monai.UNet`` with ``model.args``, …)."""
    encoder_cfg = encoder_cfg or ModelConfig()
    if isinstance(encoder_cfg, dict):
        encoder_cfg = ModelConfig.from_dict(encoder_cfg)
    if is_monai_name(encoder_cfg.name):
        return build_monai_model(encoder_cfg.name, encoder_cfg.args, num_seg_classes, in_channels, image_size)
    if is_import_path(encoder_cfg.name):
        raise ConfigError(f"model {encoder_cfg.name}: a U-Net needs a built-in encoder (its skip maps); "
                          f"segmentation runs with {', '.join(MODEL_NAMES)} or a MONAI segmentation network "
                          "(e.g. monai.BasicUNet)")
    encoder = build_model(encoder_cfg, num_classes=1, in_channels=in_channels)
    return UNet(encoder, num_seg_classes, in_channels, encoder_cfg.norm, encoder_cfg.decoder_width, raw_branch)


def apply_initial_state(model: nn.Module, state: dict, source: str) -> nn.Module:
    """Load ``state`` into ``model``: a full state dict of the same architecture, or — for a U-Net
    — a :func:`fedsim.models.build_model` state (e.g. a ``foundation.pt``) for its encoder, the
    decoder keeping its seeded initialisation. Anything else is a one-line ConfigError."""
    src = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    own = model.state_dict()
    if set(src) == set(own) and all(tuple(src[k].shape) == tuple(v.shape) for k, v in own.items()):
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(src[k].to(dtype=v.dtype))
        return model
    if hasattr(model, "load_foundation") and not any(k.startswith(SEGMENTER_PREFIXES) for k in src):
        try:
            model.load_foundation(src, strict=True)
            return model
        except ConfigError:
            pass
    bad = sorted(k for k, v in own.items() if k not in src or tuple(src[k].shape) != tuple(v.shape))
    raise ConfigError(f"{source}: state dict does not fit the model ({len(bad)} of {len(own)} tensors missing or "
                      f"of another shape, e.g. {bad[0] if bad else next(iter(src))}); use the model settings it "
                      "was saved with")


def initial_model_factory(cfg: ExperimentConfig, num_classes: int, init_state: dict | None,
                          in_channels: int = 1) -> Callable[[int | None], nn.Module]:
    """The silos' model factory: a classifier (``task: classification``) or a U-Net whose encoder
    is ``model`` (``task: segmentation``), loaded with the common initial state when there is one."""
    side = cfg.data.known_image_size

    def factory(silo: int | None = None):
        if cfg.task == "segmentation":
            model = build_segmenter(cfg.model.for_silo(silo), NUM_SEG_CLASSES, in_channels, image_size=side)
        else:
            model = build_model(cfg.model.for_silo(silo), num_classes, in_channels, side)
        if init_state is not None:
            apply_initial_state(model, init_state, cfg.init_from or f"init: {cfg.init}")
        return model

    return factory
