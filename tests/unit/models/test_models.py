"""Backbones, torchvision classifiers and the U-Net that loads foundation weights."""

import time

import pytest
import torch

from fedsim.errors import ConfigError
from fedsim.models import MODEL_NAMES, ModelConfig, build_model, build_segmenter, count_parameters

SMALL = ["cnn", "r50-vit", "shufflenet", "mobilenetv2", "resnet10", "resnet12", "resnet18"]


@pytest.mark.parametrize("name", SMALL)
def test_interface(name):
    torch.manual_seed(0)
    m = build_model(ModelConfig(name=name), num_classes=6)
    x = torch.rand(2, 1, 64, 64)
    m.eval()
    logits = m(x)
    f = m.features(x)
    assert logits.shape == (2, 6)
    assert f.dim() == 4 and f.shape[:2] == (2, m.feature_channels)
    assert torch.allclose(m.head(f), logits, atol=1e-5)
    logits.sum().backward()


def test_resnet50_builds():
    m = build_model(ModelConfig(name="resnet50"), 6)
    assert count_parameters(m) > 20_000_000
    assert m.features(torch.rand(1, 1, 64, 64)).shape[1] == 2048


def test_default_cnn_is_small_fast_and_deterministic():
    torch.manual_seed(0)
    a = build_model(ModelConfig(), 6)
    torch.manual_seed(0)
    b = build_model(ModelConfig(), 6)
    assert 50_000 <= count_parameters(a) <= 150_000
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.rand(32, 1, 64, 64)
    assert torch.equal(a(x), b(x))
    assert a.features(x).shape == (32, 64, 8, 8)  # 8x8 >= the default 5x5 EMD grid
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(2):
            a(x).sum().backward()
        t = time.perf_counter()
        for _ in range(5):
            a(x).sum().backward()
        dt = (time.perf_counter() - t) / 5
    finally:
        torch.set_num_threads(threads)
    assert dt < 0.25, f"forward+backward of 32x1x64x64 took {dt * 1000:.0f} ms"


def test_norm_choices():
    gn = build_model(ModelConfig(), 6)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in gn.modules())
    bn = build_model(ModelConfig(norm="batch"), 6)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    with pytest.raises(ConfigError):
        build_model(ModelConfig(norm="layer"), 6)
    with pytest.raises(ConfigError, match="unknown model.name"):
        build_model(ModelConfig(name="vgg"), 6)
    with pytest.raises(ConfigError, match=r"unknown config key .model\."):
        ModelConfig.from_dict({"name": "cnn", "depth": 3})
    assert set(SMALL) < set(MODEL_NAMES)


@pytest.mark.parametrize("name", ["cnn", "r50-vit", "resnet10", "mobilenetv2", "shufflenet"])
def test_segmenter_loads_foundation_encoder(name):
    torch.manual_seed(0)
    cfg = ModelConfig(name=name)
    foundation = build_model(cfg, num_classes=6)
    torch.manual_seed(1)
    seg = build_segmenter(cfg, num_seg_classes=3)
    x = torch.rand(2, 1, 64, 64)
    assert seg(x).shape == (2, 3, 64, 64)
    n = seg.load_foundation(foundation.state_dict())
    enc = seg.encoder.state_dict()
    head = [k for k in enc if k.startswith(tuple(seg.encoder.head_prefixes))]
    assert n == len(enc) - len(head) and n > 0
    fsd = foundation.state_dict()
    for k, v in enc.items():
        if k not in head:
            assert torch.equal(v, fsd[k]), k
    # the encoder now computes the foundation's features
    foundation.eval()
    seg.eval()
    assert torch.allclose(seg.encoder.features(x), foundation.features(x), atol=1e-6)
    # DDP-style prefixes and a segmenter's own state dict load too
    assert seg.load_foundation({"module." + k: v for k, v in fsd.items()}) == n
    assert build_segmenter(cfg).load_foundation(seg.state_dict()) == n


def test_load_foundation_skips_mismatched_shapes():
    seg = build_segmenter(ModelConfig(width=8))
    other = build_model(ModelConfig(width=16), 6)
    assert seg.load_foundation(other.state_dict()) == 0
    with pytest.raises(ConfigError):
        seg.load_foundation(other.state_dict(), strict=True)


@pytest.mark.parametrize("raw_branch", [True, False])
def test_unet_sees_the_pixels_only_through_the_encoder_without_raw_branch(raw_branch):
    """With the encoder's skips held fixed, the output still follows the input pixels through the
    raw branch; without it the output cannot change (every feature passed the encoder)."""
    torch.manual_seed(0)
    seg = build_segmenter(ModelConfig(width=8), raw_branch=raw_branch).eval()
    a, b = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        skips = seg.encoder.stages(a)
        seg.encoder.stages = lambda x: skips  # the encoder's view is the same for both inputs
        same = torch.equal(seg(a), seg(b))
    assert same is not raw_branch
    assert (seg.full is not None) is raw_branch
    # the foundation still loads into the encoder either way
    assert build_segmenter(ModelConfig(width=8), raw_branch=raw_branch).load_foundation(
        build_model(ModelConfig(width=8), 6).state_dict()) > 0


@pytest.mark.parametrize("name", ["cnn", "r50-vit", "resnet10", "mobilenetv2", "shufflenet"])
def test_unet_stages_halve_and_any_image_size_segments(name):
    """MONAI's decoder upsamples by 2 per level: each encoder stage is half the one before, and an
    image whose side is no multiple of the total stride is padded and the logits cropped back."""
    seg = build_segmenter(ModelConfig(name=name, width=8 if name == "cnn" else 16), 3).eval()
    with torch.no_grad():
        sides = [s.shape[-1] for s in seg.encoder.stages(torch.rand(1, 1, 64, 64))]
        assert sides == [64 // 2 ** (k + 1) for k in range(len(sides))]
        for side in (28, 50):
            assert seg(torch.rand(2, 1, side, side + 6)).shape == (2, 3, side, side + 6)
