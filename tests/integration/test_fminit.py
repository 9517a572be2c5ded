"""FM-instructed initialization (Li and Yang, "Where to begin?"): the distillation loss on a hand-worked example, every
silo of a spawned run starting from the distilled student (recomputed here from the loss written
out), ``init_from`` loading a file, and the cache.

The checks that need no process: tests/unit/test_fminit.py."""

from __future__ import annotations

import json

import torch

from fedsim import fminit
from fedsim.config import load_config
from fedsim.data import load_public
from fedsim.downstream.train import index_batches
from fedsim.models import build_segmenter
from tests.harness import TINY, soft_dice_reference
from tests.integration.harness import run_distributed

FM = ["task=segmentation", "algorithm=fedavg", "rounds=1", "train.local_steps=1", "train.lr=0",
      "fminit.proxy_samples=16", "fminit.teacher_samples=24", "fminit.teacher_steps=3", "fminit.student_steps=4",
      "fminit.batch_size=8", "fminit.teacher.name=cnn", "fminit.teacher.width=8"]


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
    for idx in index_batches(len(proxy), f.batch_size, f.student_steps, torch.Generator().manual_seed(cfg.seed + 0xD9)):
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
