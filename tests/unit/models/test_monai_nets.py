"""MONAI's networks named as models (``model.name: monai.NAME``): built for the run's images and
classes, their feature map exposed where fedsim knows it, every misfit one line."""

from __future__ import annotations

import pytest
import torch

from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.models import (
    ModelConfig,
    build_model,
    initial_model_factory,
    logits_and_features,
)
from fedsim.models.monai_nets import vit_patch_size
from fedsim.plan import build_plan

SMALL_DENSENET = {"init_features": 8, "growth_rate": 4, "block_config": [2, 2]}
SMALL_VIT = {"hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}


def test_densenet_exposes_the_map_its_class_layers_pool():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="monai.DenseNet", args=SMALL_DENSENET), 5, 3).eval()
    x = torch.rand(2, 3, 32, 32)
    logits, feats = logits_and_features(model, x)
    with torch.no_grad():
        # the reference: MONAI's own forward, and its own trunk
        assert torch.allclose(logits, model.net(x)) and torch.equal(feats, model.net.features(x).relu())
    assert logits.shape == (2, 5) and feats.dim() == 4 and feats.shape[0] == 2
    assert all(k.startswith("net.") for k in model.state_dict())


def test_resnet_exposes_layer4():
    model = build_model(ModelConfig(name="monai.resnet10"), 4, 1).eval()
    x = torch.rand(2, 1, 32, 32)
    logits, feats = logits_and_features(model, x)
    with torch.no_grad():
        assert torch.allclose(logits, model.net(x), atol=1e-6)
    assert feats.shape == (2, 512, 2, 2)


def test_vit_is_sized_for_the_images_and_its_map_is_the_patch_grid():
    import einops  # noqa: F401  (in requirements.txt: MONAI's attention layers need it)
    model = build_model(ModelConfig(name="monai.ViT", args=SMALL_VIT), 3, 1, image_size=48).eval()
    x = torch.rand(2, 1, 48, 48)
    logits, feats = logits_and_features(model, x)
    assert feats.shape == (2, 16, 8, 8)  # 48 px in patches of 6: an 8×8 grid
    with torch.no_grad():  # the head is a linear layer on the mean patch token
        tokens = model.net(x)[0]
        assert torch.allclose(logits, model.fc(tokens.mean(1)), atol=1e-6)


def test_vit_patch_grid_nearest_to_8():
    assert [vit_patch_size(s) for s in (28, 64, 96, 224)] == [4, 8, 12, 28]


def test_a_monai_segmentation_network_is_what_segmentation_silos_train():
    cfg = load_config(None, ["task=segmentation", "model.name=monai.BasicUNet", "model.args={features: [4, 4, 8, 8, 16, 4]}",
                             "downstream.enabled=false", "compare_with=[]", "algorithm=fedavg"])
    model = initial_model_factory(cfg, 6, None, 1)(0)
    assert type(model).__name__ == "BasicUNet"
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3, 32, 32)


def test_misfits_are_one_line():
    with pytest.raises(ConfigError, match="monai.networks.nets has no network 'Nope'"):
        build_model(ModelConfig(name="monai.Nope"), 2)
    with pytest.raises(ConfigError, match="never downloads"):
        build_model(ModelConfig(name="monai.DenseNet121", args={"pretrained": True}), 2)
    with pytest.raises(ConfigError, match="model.args.in_channels is set by fedsim"):
        build_model(ModelConfig(name="monai.DenseNet121", args={"in_channels": 3}), 2)
    with pytest.raises(ConfigError, match="not an argument of monai.DenseNet"):
        build_model(ModelConfig(name="monai.DenseNet", args={**SMALL_DENSENET, "depth": 3}), 2)
    with pytest.raises(ConfigError, match="set model.args.img_size"):
        build_model(ModelConfig(name="monai.ViT", args=SMALL_VIT), 2)  # no image size known


def _plan(tmp_path, *overrides):
    cfg = load_config(None, ["topology=ring-4", "rounds=1", "downstream.enabled=false", "compare_with=[]",
                             "data.image_size=32", f"output_dir={tmp_path}", *overrides])
    return build_plan(cfg, tmp_path / "run", 1)


def test_a_network_without_a_known_feature_map_is_refused_before_any_rank_for_the_emd(tmp_path):
    name = ["model.name=monai.EfficientNetBN", "model.args.model_name=efficientnet-b0"]  # no features(x)
    with pytest.raises(ConfigError, match="fedsim knows none of model monai.EfficientNetBN.*model.features_layer"):
        _plan(tmp_path, "algorithm=moon", *name)
    _plan(tmp_path, "algorithm=fedavg", *name)  # weight sharing needs no feature map (and nothing downloads)
    _plan(tmp_path, "algorithm=moon", *name, "model.features_layer=_conv_head")  # a named layer is one
    with pytest.raises(ConfigError, match="segmentation network"):
        _plan(tmp_path, "algorithm=fedavg", "task=segmentation", "model.name=monai.DenseNet",
              "model.args={init_features: 8, growth_rate: 4, block_config: [2, 2]}")
    with pytest.raises(ConfigError, match="downstream fine-tuning runs .* built-in model"):
        load_config(None, ["model.name=monai.DenseNet121", "algorithm=fedavg", "downstream.enabled=true"])
