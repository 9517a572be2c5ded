"""Foundation weights into the downstream models (``weights.py``): every backbone tensor lands
exactly where it should (the U-Net's encoder, the classifier but its head), and a file or state
dict that does not fit is one line naming its source."""

from __future__ import annotations

import pytest
import torch

from fedsim.downstream import (
    init_classifier,
    init_segmenter,
    load_foundation_file,
)
from fedsim.errors import ConfigError
from fedsim.models import ModelConfig
from tests.harness import DOWNSTREAM_MODEL


def test_segmenter_encoder_gets_every_backbone_tensor_exactly(foundation):
    random_unet, n0 = init_segmenter(None, DOWNSTREAM_MODEL, seed=0)
    unet, n = init_segmenter(foundation, DOWNSTREAM_MODEL, seed=0)
    assert n0 == 0
    enc = unet.encoder.state_dict()
    backbone = [k for k in enc if not k.startswith(unet.encoder.head_prefixes)]
    assert n == len(backbone) > 0
    for k in backbone:
        assert torch.equal(enc[k], foundation[k]), k
        assert not torch.equal(random_unet.encoder.state_dict()[k], foundation[k]), k
    # the decoder is the same for every initialization (fair comparison)
    for k, v in unet.state_dict().items():
        if not k.startswith("encoder."):
            assert torch.equal(v, random_unet.state_dict()[k]), k


def test_classifier_copies_backbone_but_not_head(foundation):
    fresh, _ = init_classifier(None, DOWNSTREAM_MODEL, seed=0)
    model, n = init_classifier(foundation, DOWNSTREAM_MODEL, seed=0)
    sd, fresh_sd = model.state_dict(), fresh.state_dict()
    heads = model.head_prefixes
    backbone = [k for k in sd if not k.startswith(heads)]
    head = [k for k in sd if k.startswith(heads)]
    assert n == len(backbone) and head
    for k in backbone:
        assert torch.equal(sd[k], foundation[k]), k
    for k in head:  # 3-class head: fresh (same as the random-init row), not the 6-class foundation head
        assert sd[k].shape[0] == 3
        assert torch.equal(sd[k], fresh_sd[k]), k
    assert model.fc.weight.shape != foundation["fc.weight"].shape


def test_state_dict_that_does_not_fit_names_the_source(foundation):
    with pytest.raises(ConfigError, match="my.pt.*does not fit"):
        init_segmenter(foundation, ModelConfig(width=16), source="my.pt")
    with pytest.raises(ConfigError, match="my.pt.*does not fit"):
        init_classifier(foundation, ModelConfig(width=16), source="my.pt")


def test_load_foundation_file_errors(tmp_path, foundation):
    with pytest.raises(ConfigError, match="nope.pt: foundation file not found"):
        load_foundation_file(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt"):
        load_foundation_file(junk)
    good = tmp_path / "foundation.pt"
    torch.save(foundation, good)
    loaded = load_foundation_file(good)
    assert all(torch.equal(loaded[k], foundation[k]) for k in foundation)
