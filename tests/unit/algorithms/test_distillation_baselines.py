"""FedDF and FedMD: the softened KL and FedMD's digest loss (L1 and KL) on hand-worked examples, and
bad distillation settings as one-line config errors."""

from __future__ import annotations

import math

import pytest
import torch

from fedsim.algorithms.fedmd import digest_loss
from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.losses import softened_kl
from tests.harness import kl_t2

# ---------------------------------------------------------------------------------------- losses


def test_softened_kl_on_a_hand_worked_example():
    # teacher softmax([ln 3, 0]) = [3/4, 1/4], student softmax([0, 0]) = [1/2, 1/2]:
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120...; the second row agrees exactly (KL 0)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kl == pytest.approx(0.1308120, abs=1e-7)
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    assert softened_kl(student, teacher, 1.0).item() == pytest.approx(kl / 2, abs=1e-6)
    # T = 2 on logits twice as large gives the same softened distributions, times T² = 4
    assert softened_kl(student[:1], 2 * teacher[:1], 2.0).item() == pytest.approx(4 * kl, abs=1e-6)
    assert softened_kl(teacher, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_digest_loss_l1_and_kl_on_a_hand_worked_example():
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    c = torch.tensor([[0.0, 2.0, 5.0], [1.0, -1.0, 0.0]])
    # |1−0| + |2−2| + |3−5| + |0−1| + |0+1| + 0 = 5 over 6 entries
    assert digest_loss(z, c, "l1", 1.0).item() == pytest.approx(5 / 6, abs=1e-7)
    assert digest_loss(z, c, "kl", 2.0).item() == pytest.approx(kl_t2(z, c, 2.0).item(), abs=1e-6)


@pytest.mark.parametrize("setting, key", [
    ("feddf.distill_steps=-1", "feddf.distill_steps"), ("feddf.lr=0", "feddf.lr"),
    ("feddf.temperature=-1", "feddf.temperature"), ("feddf.public_samples=0", "feddf.public_samples"),
    ("fedmd.digest_steps=-2", "fedmd.digest_steps"), ("fedmd.loss=l2", "fedmd.loss"),
    ("fedmd.temperature=0", "fedmd.temperature"), ("fedmd.public_samples=0", "fedmd.public_samples"),
    ("mdhfl.align_steps=-1", "mdhfl.align_steps"), ("mdhfl.sce_beta=-1", "mdhfl.sce_beta"),
    ("mdhfl.temperature=0", "mdhfl.temperature"), ("mdhfl.public_samples=0", "mdhfl.public_samples"),
])
def test_bad_distillation_settings_are_one_line_config_errors(setting, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [setting])
    assert key in str(err.value) and "\n" not in str(err.value)
