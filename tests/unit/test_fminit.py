"""FM-instructed initialization (Li and Yang, "Where to begin?"): the distillation loss on a
hand-worked example, the cache, and applying an initial state (encoder only, and a misfit)."""

from __future__ import annotations

import math

import pytest
import torch

from fedsim import fminit
from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.losses import fm_distillation_loss, pixel_kl
from fedsim.models import apply_initial_state, build_model, build_segmenter
from tests.harness import TINY

LN3 = math.log(3.0)
FM = ["task=segmentation", "algorithm=fedavg", "rounds=1", "train.local_steps=1", "train.lr=0",
      "fminit.proxy_samples=16", "fminit.teacher_samples=24", "fminit.teacher_steps=3", "fminit.student_steps=4",
      "fminit.batch_size=8", "fminit.teacher.name=cnn", "fminit.teacher.width=8"]


def test_distillation_loss_hand_worked():
    # one image of two pixels, two classes (0 background, 1 foreground)
    student = torch.tensor([[[[0.0, 0.0]], [[0.0, LN3]]]], requires_grad=True)  # p_S: (.5, .5), (.25, .75)
    teacher = torch.tensor([[[[0.0, 0.0]], [[LN3, LN3]]]], requires_grad=True)  # p_T: (.25, .75), (.25, .75)
    target = torch.tensor([[[1, 0]]])
    kl = (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5) + 0.0) / 2  # per pixel, mean over 2 pixels
    # soft Dice of class 1: (2·0.5 + 1) / ((0.5 + 0.75) + 1 + 1)
    dice_loss = 1 - (2 * 0.5 + 1) / (0.5 + 0.75 + 1 + 1)
    assert pixel_kl(student, teacher).item() == pytest.approx(kl, abs=1e-7)
    loss = fm_distillation_loss(student, teacher, target, alpha=0.6)
    assert loss.item() == pytest.approx(0.6 * kl + 0.4 * dice_loss, abs=1e-7)
    assert loss.item() == pytest.approx(0.193090, abs=1e-6)
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0  # the teacher is frozen
    # α = 1: only the KL; T = 2 scales by T² and softens both distributions
    assert fm_distillation_loss(student, teacher, target, alpha=1.0).item() == pytest.approx(kl, abs=1e-7)
    # at T = 2 pixel 1 compares softmax(0, ln3/2) with (.5, .5); pixel 2 still matches exactly
    q_t = torch.softmax(torch.tensor([0.0, LN3 / 2], dtype=torch.float64), 0)
    kl_t2 = 2.0**2 * float((q_t * (q_t / 0.5).log()).sum()) / 2
    assert pixel_kl(student, teacher, 2.0).item() == pytest.approx(kl_t2, abs=1e-6)


def test_cache_is_reused_and_keyed_by_settings(tmp_path, monkeypatch):
    base = TINY + FM + ["init=pretrained", f"output_dir={tmp_path}"]
    cfg = load_config(None, base)
    first = fminit.computed_state(cfg, "pretrained")
    monkeypatch.setattr(fminit, "pretrain_student", lambda cfg: (_ for _ in ()).throw(AssertionError("retrained")))
    again = fminit.computed_state(load_config(None, base + ["rounds=7", "data.partition=attribute"]), "pretrained")
    assert all(torch.equal(a, b) for a, b in zip(first.values(), again.values()))
    other = load_config(None, base + ["fminit.student_steps=5"])
    assert fminit.cache_path(other, "pretrained") != fminit.cache_path(cfg, "pretrained")
    assert fminit.cache_path(load_config(None, base + ["fminit.alpha=0.3"]), "fm") != fminit.cache_path(cfg, "fm")


def test_apply_initial_state_encoder_only_and_misfit():
    cfg = load_config(None, TINY + ["task=segmentation"])
    torch.manual_seed(5)
    classifier = build_model(cfg.model, 6).state_dict()  # e.g. a foundation.pt
    torch.manual_seed(0)
    unet = build_segmenter(cfg.model, 3)
    decoder = {k: v.clone() for k, v in unet.state_dict().items() if not k.startswith("encoder.")}
    apply_initial_state(unet, classifier, "foundation.pt")
    for k, v in unet.state_dict().items():
        if k.startswith("encoder.") and not k.startswith("encoder.fc."):
            assert torch.equal(v, classifier[k[len("encoder."):]])
        elif not k.startswith("encoder."):
            assert torch.equal(v, decoder[k])  # the decoder keeps its seeded initialisation
    wide = build_segmenter(load_config(None, TINY + ["model.width=8"]).model, 3).state_dict()
    with pytest.raises(ConfigError, match="big.pt: state dict does not fit the model"):
        apply_initial_state(unet, wide, "big.pt")
