"""Where federated training begins (M. Li, G. Yang, "Where to begin? From random to foundation model
instructed initialization in FL for medical image segmentation").

``init: random``: every silo starts from the seeded random U-Net (as any run).
``init: pretrained``: that same U-Net (the *student*, ``model``) first trained on the proxy set
D^P with the supervised segmentation loss (cross-entropy + soft Dice).
``init: fm``: a larger *teacher* U-Net (``fminit.teacher``, default an R50-ViT hybrid encoder),
trained on its own larger public set — our stand-in for SAM-Med2D, since nothing can be
downloaded — is frozen and distilled into the student on D^P with
L = α·KL(σ(z_T) ‖ σ(z_S)) per pixel + (1 − α)·Dice loss (α = ``fminit.alpha``, 0.6).

D^P is :func:`fedsim.data.load_public` (its own seed stream); the teacher's set is generated from
another stream (0xF4): neither overlaps a silo or the test set. The student starts from the
same seeded weights a ``random`` run starts from, so the three rows differ only by what happened
on D^P. Every state is cached under ``fminit.cache_dir`` (default ``OUTPUT_DIR/_init_cache``) in a
file named by a hash of the settings it depends on: computed once (before the ranks are spawned,
or on rank 0), then loaded by every rank and every later run with the same settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedsim.checkpoint import load_data_file
from fedsim.config.data import NUM_SEG_CLASSES
from fedsim.data import DOMAINS, NUM_CLASSES, derive_seed, generate, load_public
from fedsim.distributed import barrier, is_distributed
from fedsim.downstream import fit, load_foundation_file
from fedsim.errors import ConfigError
from fedsim.losses import fm_distillation_loss, segmentation_loss
from fedsim.models import build_segmenter
from fedsim.transport import saveable_state

_VERSION = 1  # bump when the recipe changes, so stale caches are not reused


# ---- data ---------------------------------------------------------------------------------------


def proxy_set(cfg):
    """D^P: the shared public set (its own seed stream; ``root/public`` for folder data)."""
    return load_public(cfg.data, cfg.fminit.proxy_samples, cfg.seed)


def teacher_set(cfg):
    """The teacher's larger training set: balanced over domains and classes, from its own seed
    stream (disjoint from D^P, the silos and the test set). Folder data: ``root/public``."""
    if cfg.data.kind == "folder":
        return load_public(cfg.data, cfg.fminit.teacher_samples, cfg.seed)
    n = cfg.fminit.teacher_samples
    k = torch.arange(n)
    seed = int(cfg.seed) + int(cfg.data.seed_offset)
    return generate(n, domains=k % len(DOMAINS), labels=(k // len(DOMAINS)) % NUM_CLASSES,
                    image_size=cfg.data.image_size, seed=derive_seed(seed, 0xF4, 1), name="teacher-train")


# ---- models -------------------------------------------------------------------------------------

def student_model(cfg) -> nn.Module:
    """The federated U-Net with the run's common random initialisation (as Federation.new_model)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_segmenter(cfg.model.for_silo(None), NUM_SEG_CLASSES)


def teacher_model(cfg) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 0xF4)
        return build_segmenter(cfg.fminit.teacher, NUM_SEG_CLASSES)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[s:s + batch_size]) for s in range(0, images.shape[0], batch_size)])


# ---- the three recipes ----------------------------------------------------------------------------

def train_teacher(cfg) -> nn.Module:
    """The teacher U-Net trained with the segmentation loss on its own set."""
    f = cfg.fminit
    data = teacher_set(cfg)
    model = teacher_model(cfg)
    fit(model, data.images, data.masks, f.teacher_steps, f.batch_size, f.lr, cfg.seed + 0xF4, segmentation_loss)
    return model.eval()


def pretrain_student(cfg) -> nn.Module:
    """``init: pretrained``: the student trained on D^P with the segmentation loss."""
    f = cfg.fminit
    data = proxy_set(cfg)
    model = student_model(cfg)
    fit(model, data.images, data.masks, f.student_steps, f.batch_size, f.lr, cfg.seed + 0xD9, segmentation_loss)
    return model


def distill_student(cfg, teacher: nn.Module) -> nn.Module:
    """``init: fm``: the student trained on D^P with α·KL(teacher ‖ student) + (1 − α)·Dice; the
    frozen teacher's logits on D^P are computed once. Same data, steps, batches and starting
    weights as :func:`pretrain_student`."""
    f = cfg.fminit
    data = proxy_set(cfg)
    teacher_logits = predict_logits(teacher, data.images)
    model = student_model(cfg)
    fit(model, data.images, (teacher_logits, data.masks), f.student_steps, f.batch_size, f.lr, cfg.seed + 0xD9,
        lambda logits, z_t, y: fm_distillation_loss(logits, z_t, y, f.alpha, f.temperature))
    return model


# ---- cache ----------------------------------------------------------------------------------------

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _settings(cfg, kind: str) -> dict[str, Any]:
    """What the ``kind`` state depends on (and nothing else: partition, rounds, … do not count)."""
    f = dataclasses.asdict(cfg.fminit)
    data = {k: getattr(cfg.data, k) for k in ("kind", "root", "image_size", "seed_offset")}
    common = {"version": _VERSION, "seed": cfg.seed, "data": data, "batch_size": f["batch_size"], "lr": f["lr"]}
    if kind == "teacher":
        return {**common, "kind": kind, "teacher": f["teacher"], "samples": f["teacher_samples"],
                "steps": f["teacher_steps"]}
    student = {**common, "kind": kind, "model": dataclasses.asdict(cfg.model.for_silo(None)),
               "proxy_samples": f["proxy_samples"], "steps": f["student_steps"]}
    if kind == "fm":
        student.update(alpha=f["alpha"], temperature=f["temperature"], teacher=_settings(cfg, "teacher"))
    return student


def cache_dir(cfg) -> Path:
    return Path(cfg.fminit.cache_dir or Path(cfg.output_dir) / "_init_cache")


def cache_path(cfg, kind: str) -> Path:
    """``CACHE/<kind>-<hash of its settings>.pt`` (kind: teacher | pretrained | fm)."""
    return cache_dir(cfg) / f"{kind}-{_digest(_settings(cfg, kind))}.pt"


def _save(state: dict, meta: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))


def _cached(cfg, kind: str, build, log) -> dict:
    path = cache_path(cfg, kind)
    if path.is_file():
        return load_data_file(path)
    started = time.perf_counter()
    if log:
        log(f"init: training the {kind} model (cached in {path})")
    with torch.random.fork_rng(devices=[]):
        model = build()
    state = saveable_state(model)  # on the CPU, each tensor its own storage: what a later load returns
    _save(state, {"kind": kind, "seconds": time.perf_counter() - started, "settings": _settings(cfg, kind)}, path)
    return state


def teacher_state(cfg, log=None) -> dict:
    return _cached(cfg, "teacher", lambda: train_teacher(cfg), log)


def computed_state(cfg, kind: str, log=None) -> dict:
    """The ``pretrained`` or ``fm`` student state (from the cache, or trained and cached)."""
    if kind == "pretrained":
        return _cached(cfg, kind, lambda: pretrain_student(cfg), log)
    if kind == "fm":
        teacher = None
        if not cache_path(cfg, kind).is_file():  # the teacher first (its own cache, its own time)
            teacher = teacher_model(cfg)
            teacher.load_state_dict(teacher_state(cfg, log))
        return _cached(cfg, kind, lambda: distill_student(cfg, teacher.eval()), log)
    raise ConfigError(f"unknown init {kind!r}; choose one of random, pretrained, fm")


def needs_training(cfg) -> bool:
    return cfg.init in ("pretrained", "fm") and cfg.init_from is None


def prepare_initial_state(cfg, log=None) -> None:
    """Compute and cache the run's initial state before any rank starts (no-op when cached)."""
    if needs_training(cfg):
        computed_state(cfg, cfg.init, log)


def check_initial_state(cfg) -> None:
    """Read the files the run's initial state would be read from (``init_from``; a cached
    ``pretrained`` / ``fm`` state, or the teacher an ``fm`` state is still to be distilled from)
    as the ranks will: a file that is not a model state dict, or holds anything but data, is a
    one-line error here, before any rank starts."""
    if cfg.init_from is not None:
        load_foundation_file(Path(cfg.init_from).expanduser())
        return
    if not needs_training(cfg):
        return
    kinds = [cfg.init] + (["teacher"] if cfg.init == "fm" and not cache_path(cfg, "fm").is_file() else [])
    for kind in kinds:
        if cache_path(cfg, kind).is_file():
            load_data_file(cache_path(cfg, kind))


def initial_state(cfg, ctx=None) -> dict | None:
    """The state every silo starts from (None: the seeded random initialisation). With a process
    group, rank 0 trains it if it is not cached yet while the others wait, then every rank loads
    the same file."""
    if cfg.init_from is not None:
        return load_foundation_file(Path(cfg.init_from).expanduser())
    if not needs_training(cfg):
        return None
    distributed = ctx is not None and is_distributed()
    if not distributed or ctx.rank == 0:
        state = computed_state(cfg, cfg.init)
    if distributed:
        barrier()
        if ctx.rank != 0:
            state = computed_state(cfg, cfg.init)
    return state


