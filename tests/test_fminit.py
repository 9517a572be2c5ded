"""FM-instructed initialization (Li and Yang, "Where to begin?"): the distillation loss on a hand-worked example, every
silo of a spawned run starting from the distilled student (recomputed here from the loss written
out), ``init_from`` loading a file, and the cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fedsim import fminit
from fedsim.config import load_config
from fedsim.data import load_public
from fedsim.downstream import _batches
from fedsim.errors import ConfigError
from fedsim.losses import fm_distillation_loss, pixel_kl
from fedsim.models import apply_initial_state, build_model, build_segmenter
from tests.algorithms.test_equivalence import TINY, run_distributed
from tests.test_segmentation_task import soft_dice_reference

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


def flat_state(state):
    return torch.cat([t.double().reshape(-1) for t in state.values() if t.is_floating_point()])


def test_fm_init_starts_every_silo_from_the_distilled_student(tmp_path):
    # train.lr = 0: a silo's model after its round is the state it started from
    overrides = FM + ["init=fm", "scenario=standalone", "name=fm"]
    got = run_distributed(tmp_path, overrides)  # rank 0 trains teacher + student, rank 1 waits, both load
    cfg = load_config(None, TINY + overrides + [f"output_dir={tmp_path}"])
    cached = torch.load(fminit.cache_path(cfg, "fm"), weights_only=True)
    assert fminit.cache_path(cfg, "teacher").is_file()
    assert sorted(got) == [0, 1, 2, 3]
    for i, tensors in got.items():
        assert len(tensors) == len(cached)
        for a, b in zip(tensors, cached.values()):
            assert torch.equal(a, b), f"silo {i} did not start from the FM-instructed student"

    # the cached student is the distillation, recomputed here from the loss written out
    f = cfg.fminit
    teacher = build_segmenter(f.teacher, 3)
    teacher.load_state_dict(torch.load(fminit.cache_path(cfg, "teacher"), weights_only=True))
    teacher.eval()
    proxy = load_public(cfg.data, f.proxy_samples, cfg.seed)
    with torch.no_grad():
        p_t = teacher(proxy.images).softmax(1)
    torch.manual_seed(cfg.seed)
    student = build_segmenter(cfg.model, 3)
    random_start = flat_state(student.state_dict()).clone()
    opt = torch.optim.Adam(student.parameters(), lr=f.lr)
    student.train()
    for idx in _batches(len(proxy), f.batch_size, f.student_steps, torch.Generator().manual_seed(cfg.seed + 0xD9)):
        logits = student(proxy.images[idx])
        log_s = logits.log_softmax(1)
        kl = (p_t[idx] * (p_t[idx].log() - log_s)).sum(1).mean()
        loss = f.alpha * kl + (1 - f.alpha) * soft_dice_reference(logits, proxy.masks[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for (k, a), b in zip(cached.items(), student.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=k)
    assert (flat_state(cached) - random_start).abs().max() > 1e-3

    # pre-training (segmentation loss only, same data/steps/start) gives another state
    pre = fminit.computed_state(cfg, "pretrained")
    assert (flat_state(pre) - flat_state(cached)).abs().max() > 1e-4
    meta = json.loads(fminit.cache_path(cfg, "fm").with_suffix(".json").read_text())
    assert meta["kind"] == "fm" and meta["settings"]["alpha"] == 0.6


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


def test_init_from_loads_a_file_on_every_silo(tmp_path):
    torch.manual_seed(123)
    cfg = load_config(None, TINY + ["task=segmentation"])
    saved = build_segmenter(cfg.model, 3).state_dict()
    path = tmp_path / "start.pt"
    torch.save(saved, path)
    overrides = ["task=segmentation", "algorithm=fedavg", "scenario=cll", "rounds=1", "train.local_steps=1",
                 "train.lr=0", "train.eval_every=1", f"init_from={path}", "name=file"]
    got = run_distributed(tmp_path, overrides, nproc=1)
    assert sorted(got) == [0]  # CLL: one pooled silo
    for a, b in zip(got[0], saved.values()):
        assert torch.equal(a, b)
    summary = json.loads((tmp_path / "file" / "summary.json").read_text())
    assert summary["init"] == "file" and summary["scenario"] == "cll" and summary["foundation_dice"] is not None


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
