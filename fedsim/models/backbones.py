"""Foundation backbones: every model has ``forward(x) -> logits``, ``features(x) -> dense map``
(the last conv map before pooling), ``stages(x) -> [skip maps, coarse to fine reversed]`` for the
U-Net (each map half the size of the one before: /2, /4, /8, …), ``stage_channels`` and ``head_prefixes`` (parameter names that belong to the classifier
head and are never copied into a segmenter).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def norm_layer(kind: str, channels: int, groups: int = 0) -> nn.Module:
    """``group``: GroupNorm with ``groups`` groups (0 = one channel per group, the default: on the
    synthetic data it trained several times faster than 8 groups and as fast as BatchNorm);
    ``batch``: BatchNorm2d; ``none``: identity."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(channels if groups <= 0 else math.gcd(groups, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def conv_block(cin: int, cout: int, norm: str, stride: int = 1, groups: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=norm == "none"), norm_layer(norm, cout, groups),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """CPU-sized foundation backbone ("cnn").

    stem: 3x3 stride-2 conv (w, /2) -> stage1: 3x3 stride-2 conv + 3x3 conv (2w, /4) ->
    stage2: 3x3 stride-2 conv + 3x3 conv + 3x3 conv (4w, /8). features(x) is the (B, 4w, H/8, W/8)
    map (8x8 at 64x64 input). w=16: ~106k parameters, ~9.6 M multiply-adds per 64x64 image.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16, norm: str = "group",
                 dropout: float = 0.0, groups: int = 0):
        super().__init__()
        w = width
        g = groups
        self.stem = conv_block(in_channels, w, norm, 2, g)
        self.stage1 = nn.Sequential(conv_block(w, 2 * w, norm, 2, g), conv_block(2 * w, 2 * w, norm, 1, g))
        self.stage2 = nn.Sequential(conv_block(2 * w, 4 * w, norm, 2, g), conv_block(4 * w, 4 * w, norm, 1, g),
                                    conv_block(4 * w, 4 * w, norm, 1, g))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(4 * w, num_classes)
        self.stage_channels = [w, 2 * w, 4 * w]
        self.head_prefixes = ("fc.",)
        self.feature_channels = 4 * w

    def stages(self, x: Tensor) -> list[Tensor]:
        s0 = self.stem(x)        # /2
        s1 = self.stage1(s0)     # /4
        s2 = self.stage2(s1)     # /8
        return [s0, s1, s2]

    def features(self, x: Tensor) -> Tensor:
        return self.stages(x)[-1]

    def head(self, f: Tensor) -> Tensor:
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class TorchvisionNet(nn.Module):
    """A torchvision classifier (random init) adapted to ``in_channels`` with the common
    backbone interface. ``net`` is the torchvision module (so its state dict keys are ``net.*``)."""

    def __init__(self, family: str, net: nn.Module, num_classes: int, in_channels: int):
        super().__init__()
        self.family = family
        if family == "resnet":
            if in_channels != 3:
                net.conv1 = nn.Conv2d(in_channels, net.conv1.out_channels, 7, 2, 3, bias=False)
            net.fc = nn.Linear(net.fc.in_features, num_classes)
            self.head_prefixes = ("net.fc.",)
        elif family == "shufflenet":
            if in_channels != 3:
                c = net.conv1[0]
                net.conv1[0] = nn.Conv2d(in_channels, c.out_channels, 3, 2, 1, bias=False)
            net.fc = nn.Linear(net.fc.in_features, num_classes)
            self.head_prefixes = ("net.fc.",)
        elif family == "mobilenet":
            if in_channels != 3:
                c = net.features[0][0]
                net.features[0][0] = nn.Conv2d(in_channels, c.out_channels, 3, 2, 1, bias=False)
            net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_classes)
            self.head_prefixes = ("net.classifier.",)
        else:
            raise ValueError(family)
        self.net = net
        was = net.training
        net.eval()
        with torch.no_grad():  # probe the skip-map channels once
            self.stage_channels = [s.shape[1] for s in self.stages(torch.zeros(1, in_channels, 64, 64))]
        net.train(was)
        self.feature_channels = self.stage_channels[-1]

    def stages(self, x: Tensor) -> list[Tensor]:
        n = self.net
        if self.family == "resnet":
            s0 = n.relu(n.bn1(n.conv1(x)))                  # /2
            s1 = n.layer1(n.maxpool(s0))                    # /4
            s2 = n.layer2(s1)                               # /8
            s3 = n.layer3(s2)                               # /16
            s4 = n.layer4(s3)                               # /32
            return [s0, s1, s2, s3, s4]
        if self.family == "shufflenet":  # every stage half the one before: the U-Net upsamples by 2
            s0 = n.conv1(x)                                 # /2
            s1 = n.maxpool(s0)                              # /4
            s2 = n.stage2(s1)                               # /8
            s3 = n.stage3(s2)                               # /16
            s4 = n.conv5(n.stage4(s3))                      # /32
            return [s0, s1, s2, s3, s4]
        outs, h = [], x
        for i, layer in enumerate(n.features):             # mobilenet: keep the map before each downsampling
            nxt = layer(h)
            if nxt.shape[-1] < h.shape[-1] and i > 0:
                outs.append(h)
            h = nxt
        outs.append(h)
        return outs

    def features(self, x: Tensor) -> Tensor:
        if self.family == "mobilenet":
            return self.net.features(x)
        return self.stages(x)[-1]

    def head(self, f: Tensor) -> Tensor:
        if self.family == "mobilenet":
            return self.net.classifier(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))
        return self.net.fc(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class R50ViT(nn.Module):
    """A small ResNet + ViT hybrid ("r50-vit"): a bottleneck-ResNet stem at stride 8 produces
    patch tokens, a transformer encoder mixes them, ``features`` reshapes tokens back to a map."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16, depth: int = 2,
                 heads: int = 4, dim: int = 128, norm: str = "group"):
        super().__init__()
        from torchvision.models.resnet import Bottleneck

        w = width
        self.stem = conv_block(in_channels, 2 * w, norm, stride=2)

        def down(cin, planes):
            ds = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, 2, bias=False), norm_layer(norm, planes * 4))
            return Bottleneck(cin, planes, stride=2, downsample=ds,
                              norm_layer=lambda c: norm_layer(norm, c))

        self.layer1 = down(2 * w, w)          # /4, 4w
        self.layer2 = down(4 * w, 2 * w)      # /8, 8w
        self.proj = nn.Conv2d(8 * w, dim, 1)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        self.stage_channels = [2 * w, 4 * w, dim]
        self.head_prefixes = ("fc.",)
        self.feature_channels = dim

    def _pos(self, h: int, w: int, dim: int, device) -> Tensor:
        # fixed 2-D sine-cosine positional embedding (any input size, no parameters)
        d4 = dim // 4
        omega = 1.0 / (10000 ** (torch.arange(d4, device=device, dtype=torch.float32) / d4))
        yy, xx = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
        oy, ox = yy.reshape(-1, 1) * omega, xx.reshape(-1, 1) * omega
        pe = torch.cat([oy.sin(), oy.cos(), ox.sin(), ox.cos()], dim=1)
        return F.pad(pe, (0, dim - pe.shape[1]))

    def stages(self, x: Tensor) -> list[Tensor]:
        s0 = self.stem(x)
        s1 = self.layer1(s0)
        t = self.proj(self.layer2(s1))
        b, c, h, w = t.shape
        tok = t.flatten(2).transpose(1, 2) + self._pos(h, w, c, t.device)
        tok = self.norm(self.transformer(tok))
        return [s0, s1, tok.transpose(1, 2).reshape(b, c, h, w)]

    def features(self, x: Tensor) -> Tensor:
        return self.stages(x)[-1]

    def head(self, f: Tensor) -> Tensor:
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
