"""MDH-FL: the symmetric cross-entropy by hand, and the weight-sharing algorithms refuse
heterogeneous models."""

from __future__ import annotations

import math

import pytest
import torch

from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.losses import symmetric_cross_entropy
from fedsim.plan import scenario_for


def test_symmetric_cross_entropy_by_hand():
    # logits [ln 3, 0] → p = [3/4, 1/4]; label 0: CE = ln(4/3), RCE = −A (1 − p_y) = 4 · 1/4 = 1
    logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([0, 1])  # label 1: CE = ln 4, RCE = 4 · 3/4 = 3
    ce = (math.log(4 / 3) + math.log(4)) / 2
    rce = (1.0 + 3.0) / 2
    got = symmetric_cross_entropy(logits, y, alpha=0.1, beta=1.0)
    assert got.item() == pytest.approx(0.1 * ce + rce, abs=1e-6)
    assert symmetric_cross_entropy(logits, y, alpha=1.0, beta=0.0).item() == pytest.approx(ce, abs=1e-6)


def test_weight_sharing_algorithms_refuse_heterogeneous_models():
    cfg = load_config(None, ["algorithm=fedavg", "model.per_silo=[cnn,resnet10]"])
    with pytest.raises(ConfigError, match="needs one architecture on every silo"):
        scenario_for(cfg)
    assert scenario_for(load_config(None, ["algorithm=fedmd", "model.per_silo=[cnn,resnet10]"])) == "cfl"
