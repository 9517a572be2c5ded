"""Downstream fine-tuning from a foundation model Θ.

Two tasks on a generated downstream set (one domain, "human" by default):

* **segmentation**: a U-Net (:func:`fedsim.models.build_segmenter`, without the decoder's
  raw-pixel branch by default) whose encoder is loaded from the foundation state dict (every
  backbone tensor; the classifier head is not part of the encoder's job), the decoder freshly
  initialised. Few-shot (``seg_train_samples`` images): the decoder first trains alone on the
  frozen encoder (``seg_warmup_steps``), then the whole U-Net (``seg_steps``, the encoder at the
  smaller ``seg_encoder_lr``). Scored on catheter / guidewire Dice, mIoU and per-image Jaccard with
  background excluded (:mod:`fedsim.metrics`). docs/downstream.md and its records have the
  measurements behind this recipe.
* **classification**: a :func:`fedsim.models.build_model` classifier with 3 classes on the
  tube-position label (normal / borderline / abnormal), every backbone tensor copied from the
  foundation, the head (``head_prefixes``) freshly initialised, the whole network fine-tuned;
  scored on accuracy.

:func:`compare_initializations` runs both tasks from several initialisations (random, FedAvg Θ,
FedEFM Θ, …) on the *same* downstream data, once per fine-tune seed (``seeds``: the decoder/head
initialisation and the batch order, shared by every row), and reports each score's mean and
standard deviation over the seeds, plus the paired difference to random initialisation — so a
reader sees how much of a difference between rows is noise. ``split="val"`` scores on a quarter of
the downstream *training* images held out (for choosing a recipe; never the test set).
Everything is single-process and deterministic for fixed seeds.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.table import Table

from fedsim.checkpoint import load_data_file
from fedsim.config.downstream import TASKS, DownstreamConfig
from fedsim.data import DOMAINS, derive_seed, generate
from fedsim.errors import ConfigError, UnreadableFileError, UnsafeFileError
from fedsim.losses import segmentation_loss
from fedsim.metrics import accuracy, segmentation_scores
from fedsim.models import ModelConfig, build_model, build_segmenter
from fedsim.optim import Adam
from fedsim.report import num, pm
from fedsim.stats import mean_std

__all__ = [
    "DownstreamConfig", "DownstreamData", "SPLITS", "TASKS", "compare_initializations", "downstream_table",
    "finetune_classification", "finetune_segmentation", "init_classifier", "init_segmenter",
    "fit", "fit_segmenter", "load_classifier_backbone", "load_foundation_file", "make_downstream_data",
    "image_sizes", "rows_to_json", "usable_cpus",
]

SPLITS = ("test", "val")


@dataclass
class DownstreamData:
    train: Any   # SiloDataset
    test: Any    # SiloDataset (split "val": the held-out quarter of the generated training images)
    split: Literal["test", "val"] = "test"


def _image_size(data_cfg_or_image_size) -> int:
    if data_cfg_or_image_size is None:
        return 64
    if isinstance(data_cfg_or_image_size, int):
        return int(data_cfg_or_image_size)
    if isinstance(data_cfg_or_image_size, dict):
        return int(data_cfg_or_image_size.get("image_size", 64))
    return int(data_cfg_or_image_size.image_size)


def _ds_cfg(ds_cfg) -> DownstreamConfig:
    if ds_cfg is None:
        ds_cfg = DownstreamConfig()
    elif isinstance(ds_cfg, dict):
        ds_cfg = DownstreamConfig.from_dict(ds_cfg)
    ds_cfg.validate()
    return ds_cfg


def _model_cfg(model_cfg):
    if model_cfg is None:
        return ModelConfig()
    if isinstance(model_cfg, dict):
        return ModelConfig.from_dict(model_cfg)
    return model_cfg


def image_sizes(ds_cfg: DownstreamConfig, image_size: int) -> dict[str, int]:
    """The image size of each configured task: segmentation at ``seg_image_size`` (when set),
    classification at the run's ``image_size``."""
    sizes = {"segmentation": int(ds_cfg.seg_image_size or image_size), "classification": int(image_size)}
    return {t: sizes[t] for t in TASKS if t in ds_cfg.tasks}


def make_downstream_data(ds_cfg: DownstreamConfig, image_size: int, seed: int, split: str = "test",
                         task: str = "segmentation") -> DownstreamData:
    """The downstream train/test sets: generated from their own seed streams (0xD5, 1/2), so they
    never coincide with a federated run's silo or test images of the same seed.

    ``split="val"``: the evaluation set is the last quarter of the generated *training* images
    and the model trains on the rest (the test images are not even generated), for choosing a
    fine-tuning recipe without looking at the test set. ``task="segmentation"`` renders the
    scenes at ``ds_cfg.seg_image_size`` when set (the same scenes: sizes share the seed), else at
    ``image_size`` (the run's)."""
    if task == "segmentation":
        image_size = int(ds_cfg.seg_image_size or image_size)
    if split not in SPLITS:
        raise ConfigError(f"downstream split must be one of {', '.join(SPLITS)}, got {split!r}")
    domains = ds_cfg.domain if ds_cfg.domain is not None else list(DOMAINS)
    train = generate(ds_cfg.train_samples, domains=domains, image_size=image_size,
                     seed=derive_seed(seed, 0xD5, 1), name="downstream-train")
    if split == "val":
        n_val = ds_cfg.train_samples // 4
        kept = ds_cfg.train_samples - n_val
        if n_val < 1 or ds_cfg.seg_train_samples > kept:
            raise ConfigError(f"split 'val' holds out a quarter of downstream.train_samples ({ds_cfg.train_samples}): "
                              f"too few to keep {ds_cfg.seg_train_samples} segmentation training images and a "
                              "validation set; raise train_samples")
        return DownstreamData(train.subset(torch.arange(kept)), train.subset(torch.arange(kept, ds_cfg.train_samples)),
                              "val")
    test = generate(ds_cfg.test_samples, domains=domains, image_size=image_size,
                    seed=derive_seed(seed, 0xD5, 2), name="downstream-test")
    return DownstreamData(train, test)


# ---- loading foundation weights -----------------------------------------------------------------

def load_foundation_file(path: str | Path) -> dict:
    """A ``foundation.pt`` state dict (tensors only). Also accepts a dict holding one under
    ``state_dict``/``model``/``foundation``. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: foundation file not found")
    try:
        obj = load_data_file(path)
    except UnsafeFileError:
        raise
    except UnreadableFileError as exc:  # a file given in the config or on the command line: a config error
        raise ConfigError(str(exc)) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "foundation"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path}: not a model state dict (expected a dict of tensors, as in runs/NAME/foundation.pt)")
    return obj


def _backbone_source(state: dict) -> dict:
    """Strip ``module.``; reduce a segmenter's state dict to its encoder."""
    src = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if any(k.startswith(("lateral.", "up.", "final.")) for k in src):
        src = {k[len("encoder."):]: v for k, v in src.items() if k.startswith("encoder.")}
    return src


def load_classifier_backbone(model: nn.Module, state: dict, source: str = "foundation") -> int:
    """Copy every non-head tensor of ``model`` from ``state`` (names and shapes must match; the
    head keeps its fresh initialisation). Raises :class:`ConfigError` naming ``source`` when any
    backbone tensor is missing or has another shape. Returns the number of tensors copied."""
    src = _backbone_source(state)
    own = model.state_dict()
    heads = tuple(model.head_prefixes)
    missing, copied = [], 0
    for k, v in own.items():
        if k.startswith(heads):
            continue
        if k not in src or tuple(src[k].shape) != tuple(v.shape):
            missing.append(k)
    if missing:
        raise ConfigError(_misfit(source, missing, len(own)))
    with torch.no_grad():
        for k, v in own.items():
            if not k.startswith(heads):
                v.copy_(src[k].to(dtype=v.dtype))
                copied += 1
    return copied


def _misfit(source: str, missing: list[str], total: int) -> str:
    return (f"{source}: state dict does not fit the downstream model ({len(missing)} of {total} backbone tensors "
            f"missing or of another shape, e.g. {missing[0]}); pass the model settings it was trained with "
            "(--model-set name=... width=...)")


def _load_encoder(unet, state: dict, source: str) -> int:
    heads = tuple(unet.encoder.head_prefixes)
    expected = [k for k in unet.encoder.state_dict() if not k.startswith(heads)]
    n = unet.load_foundation(state)
    if n != len(expected):
        src = _backbone_source(state)
        own = unet.encoder.state_dict()
        missing = [k for k in expected if k not in src or tuple(src[k].shape) != tuple(own[k].shape)]
        raise ConfigError(_misfit(source, missing or expected, len(expected)))
    return n


def init_segmenter(init_state: dict | None, model_cfg=None, seed: int = 0, in_channels: int = 1,
                   source: str = "foundation", raw_branch: bool = False):
    """``(unet, tensors_loaded)``: a U-Net built under ``torch.manual_seed(seed)`` (so the decoder
    is the same for every initialization), its encoder's backbone tensors then overwritten from
    ``init_state`` (all of them or a :class:`ConfigError` naming ``source``). ``raw_branch``: the
    decoder's full-resolution conv on the input (:class:`fedsim.models.UNet`)."""
    torch.manual_seed(seed)
    model = build_segmenter(_model_cfg(model_cfg), num_seg_classes=3, in_channels=in_channels,
                            raw_branch=raw_branch)
    loaded = _load_encoder(model, init_state, source) if init_state is not None else 0
    return model, loaded


def init_classifier(init_state: dict | None, model_cfg=None, seed: int = 0, in_channels: int = 1,
                    source: str = "foundation"):
    """``(classifier, tensors_loaded)``: a 3-class tube-position classifier built under
    ``torch.manual_seed(seed + 1)``, every backbone tensor copied from ``init_state``, the head
    (``head_prefixes``) left at its fresh initialisation."""
    torch.manual_seed(seed + 1)
    model = build_model(_model_cfg(model_cfg), num_classes=3, in_channels=in_channels)
    loaded = load_classifier_backbone(model, init_state, source) if init_state is not None else 0
    return model, loaded


# ---- training -----------------------------------------------------------------------------------

def _batches(n: int, batch_size: int, steps: int, g: torch.Generator):
    """``steps`` index batches: reshuffled passes over range(n) driven by ``g``."""
    perm, pos = torch.randperm(n, generator=g), 0
    bs = min(batch_size, n)
    for _ in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos:pos + bs]
        pos += bs


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    model.eval()
    out = [model(images[s:s + batch_size]).argmax(1) for s in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


def fit(model: nn.Module, x_all: torch.Tensor, targets, steps: int, batch_size: int, lr: float,
        batch_seed: int, loss_fn) -> list[float]:
    """Adam on seeded mini-batches: ``steps`` steps of ``loss_fn(model(x), *targets[idx])``
    (``targets`` one tensor or a tuple of tensors indexed like ``x_all``); the loss of every step."""
    targets = targets if isinstance(targets, tuple) else (targets,)
    opt = Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(batch_seed)
    losses = []
    model.train()
    for idx in _batches(len(x_all), batch_size, steps, g):
        loss = loss_fn(model(x_all[idx]), *(t[idx] for t in targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _fit(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, ds_cfg: DownstreamConfig,
         batch_seed: int, loss_fn) -> list[float]:
    """:func:`fit` for the configured classification steps/epochs."""
    return fit(model, x_all, y_all, ds_cfg.num_steps(), ds_cfg.batch_size, ds_cfg.lr, batch_seed, loss_fn)


def fit_segmenter(unet: nn.Module, x_all: torch.Tensor, masks: torch.Tensor, ds_cfg: DownstreamConfig,
                  batch_seed: int) -> list[float]:
    """The segmentation recipe: ``seg_warmup_steps`` Adam steps on the decoder alone (encoder
    frozen, in eval mode so BatchNorm statistics stay Θ's), then ``seg_steps`` on the whole U-Net
    with the encoder at ``seg_encoder_lr`` (0: it stays frozen); one batch stream for both phases.
    Returns the loss of every step.

    Why a warm-up: a fresh decoder's first gradients are large and random; sent into a pretrained
    encoder they overwrite what it knows before the decoder has learnt to use it (linear-probe then
    fine-tune, Kumar et al. 2022). The smaller encoder rate keeps it near Θ once it trains.
    ``seg_schedule: cosine`` scales every group's rate by ½(1 + cos(π t / T)) at step t of T."""
    encoder = unet.encoder
    enc_params = list(encoder.parameters())
    enc_ids = {id(p) for p in enc_params}
    opt = Adam([p for p in unet.parameters() if id(p) not in enc_ids], lr=ds_cfg.seg_lr)
    warmup = ds_cfg.seg_warmup_steps
    total = warmup + ds_cfg.seg_steps
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    g = torch.Generator().manual_seed(batch_seed)
    losses: list[float] = []
    unet.train()
    encoder.eval()
    for p in enc_params:
        p.requires_grad_(False)
    try:
        for step, idx in enumerate(_batches(len(x_all), ds_cfg.seg_batch_size, total, g)):
            if step == warmup and ds_cfg.seg_encoder_lr > 0:
                for p in enc_params:
                    p.requires_grad_(True)
                encoder.train()
                opt.add_param_group({"params": enc_params, "lr": ds_cfg.seg_encoder_lr,
                                     "base_lr": ds_cfg.seg_encoder_lr})
            if ds_cfg.seg_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * 0.5 * (1.0 + math.cos(math.pi * step / total))
            loss = segmentation_loss(unet(x_all[idx]), masks[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        for p in enc_params:
            p.requires_grad_(True)
    return losses


def _tail_mean(losses: list[float]) -> float:
    return sum(losses[-10:]) / len(losses[-10:]) if losses else math.nan


def finetune_segmentation(init_state: dict | None, model_cfg=None, ds_cfg: DownstreamConfig | dict | None = None,
                          data_cfg_or_image_size=64, seed: int = 0, *, data: DownstreamData | None = None,
                          source: str = "foundation") -> dict:
    """Fine-tune a U-Net whose encoder starts from ``init_state`` (a :func:`build_model` state dict,
    e.g. ``foundation.pt``; None = random) on the first ``seg_train_samples`` downstream training
    images with :func:`fit_segmenter`; ``seed`` is the fine-tune seed (decoder initialisation and
    batch order); ``data`` defaults to :func:`make_downstream_data` from ``ds_cfg.seed``. Returns
    the scores on ``data.test``: ``dice`` / ``miou`` / ``jaccard`` (catheter+guidewire mean),
    ``dice_catheter``, ``dice_guidewire``, ``iou_catheter``, ``iou_guidewire``, ``pixel_accuracy``,
    ``seg_loss`` (last 10 steps), ``seg_seconds``, ``encoder_tensors_loaded``."""
    ds_cfg, mcfg = _ds_cfg(ds_cfg), _model_cfg(model_cfg)
    data = data or make_downstream_data(ds_cfg, _image_size(data_cfg_or_image_size), ds_cfg.seed)
    started = time.perf_counter()
    model, loaded = init_segmenter(init_state, mcfg, int(seed), data.train.images.shape[1], source,
                                   ds_cfg.seg_raw_branch)
    n = min(ds_cfg.seg_train_samples, len(data.train))
    losses = fit_segmenter(model, data.train.images[:n], data.train.masks[:n], ds_cfg, int(seed))
    pred = _predict(model, data.test.images)
    s = segmentation_scores(pred, data.test.masks, num_classes=3)
    dpc, ipc = s["dice_per_class"], s["iou_per_class"]
    return {
        "dice": s["dice"], "miou": s["miou"], "jaccard": s["jaccard"],
        "dice_catheter": dpc[1], "dice_guidewire": dpc[2], "iou_catheter": ipc[1], "iou_guidewire": ipc[2],
        "pixel_accuracy": s["pixel_accuracy"],
        "seg_loss": _tail_mean(losses),
        "seg_seconds": time.perf_counter() - started,
        "encoder_tensors_loaded": loaded,
    }


def finetune_classification(init_state: dict | None, model_cfg=None, ds_cfg: DownstreamConfig | dict | None = None,
                            data_cfg_or_image_size=64, seed: int = 0, *,
                            data: DownstreamData | None = None, source: str = "foundation") -> dict:
    """Fine-tune a 3-class :func:`build_model` classifier on the tube-position label, every backbone
    tensor copied from ``init_state`` (None = random), the head fresh; ``seed`` is the fine-tune
    seed (head initialisation and batch order). Returns ``accuracy`` (on ``data.test``),
    ``train_accuracy``, ``cls_loss`` (last 10 steps), ``cls_seconds``, ``backbone_tensors_loaded``."""
    ds_cfg, mcfg = _ds_cfg(ds_cfg), _model_cfg(model_cfg)
    data = data or make_downstream_data(ds_cfg, _image_size(data_cfg_or_image_size), ds_cfg.seed,
                                        task="classification")
    started = time.perf_counter()
    model, loaded = init_classifier(init_state, mcfg, int(seed), data.train.images.shape[1], source)
    losses = _fit(model, data.train.images, data.train.tube, ds_cfg, int(seed) + 1, F.cross_entropy)
    return {
        "accuracy": accuracy(_predict(model, data.test.images), data.test.tube),
        "train_accuracy": accuracy(_predict(model, data.train.images), data.train.tube),
        "cls_loss": _tail_mean(losses),
        "cls_seconds": time.perf_counter() - started,
        "backbone_tensors_loaded": loaded,
    }


# ---- comparison ---------------------------------------------------------------------------------

def _resolve_init(init) -> tuple[dict | None, str]:
    if init is None:
        return None, "random"
    if isinstance(init, (str, Path)):
        return load_foundation_file(init), str(init)
    if isinstance(init, dict):
        return init, "state dict"
    raise ConfigError(f"an initialization must be None, a path or a state dict, got {type(init).__name__}")


def _finetune_all(state: dict | None, mcfg, ds_cfg: DownstreamConfig, image_size: int, seed: int, source: str,
                  data: dict[str, DownstreamData]) -> dict:
    """One fine-tune seed of one initialization: every configured task, on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores: dict[str, Any] = {"seed": seed}
        if "segmentation" in ds_cfg.tasks:
            scores.update(finetune_segmentation(state, mcfg, ds_cfg, image_size, seed, data=data["segmentation"],
                                                source=source))
        if "classification" in ds_cfg.tasks:
            scores.update(finetune_classification(state, mcfg, ds_cfg, image_size, seed, data=data["classification"],
                                                  source=source))
        return scores
    finally:
        torch.set_num_threads(threads)


_WORKER_DATA: dict[str, DownstreamData] | None = None


def _worker_init(data: dict[str, DownstreamData]) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data
    torch.set_num_threads(1)


def _worker_job(args: tuple) -> dict:
    return _finetune_all(*args, data=_WORKER_DATA)


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run_jobs(jobs: list[tuple], data: dict[str, DownstreamData], workers: int) -> list[dict]:
    """Every ``(state, mcfg, ds_cfg, image_size, seed, source)`` fine-tune, in order: here when
    ``workers`` is 1, else in a pool of spawned single-thread processes (spawn, not fork: the
    caller may hold threads or a process group). The downstream data travel once per worker."""
    if workers <= 1 or len(jobs) <= 1:
        return [_finetune_all(*job, data=data) for job in jobs]

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(data,)) as pool:
        return list(pool.map(_worker_job, jobs))


def compare_initializations(inits: dict[str, str | Path | dict | None], model_cfg=None,
                            ds_cfg: DownstreamConfig | dict | None = None, image_size: int = 64,
                            seed: int | None = None, progress=None, split: str = "test") -> list[dict]:
    """One row per ``{name: init}`` (None = random, a path to ``foundation.pt``, or a state dict).

    Every row is fine-tuned once per fine-tune seed in ``ds_cfg.seeds`` on the same downstream data
    (drawn from ``seed``, default ``ds_cfg.seed``); seed k gives every row the same decoder/head
    initialisation and batch order, so rows differ only by the initial encoder weights. A row
    holds, for every score (``dice``, ``miou``, ``jaccard``, ``dice_catheter``, ``accuracy``, …),
    the mean over the seeds under its own name and the sample standard deviation as
    ``<score>_std`` (NaN with one seed); with a random row (init None) every other row also gets
    ``dice_delta`` / ``accuracy_delta`` (+ ``_std``): the mean and std over seeds of its paired
    difference to random init. Also ``init``, ``source``, ``seeds``, ``per_seed`` (one dict of
    scores per seed), ``domain``, ``split``, ``steps``, ``seg_steps``, ``seed``, ``seconds``
    (the row's fine-tuning time, summed over its seeds). Every file is loaded and checked against
    the model before any training, so a bad path fails fast. ``split="val"`` scores on held-out
    training images (:func:`make_downstream_data`). The fine-tunes (rows × seeds) run in
    ``ds_cfg.workers`` processes (0: one per usable core); each is single-threaded, so the
    scores do not depend on the number. ``progress``: optional callable(str) told what runs."""
    ds_cfg, mcfg = _ds_cfg(ds_cfg), _model_cfg(model_cfg)
    seed = ds_cfg.seed if seed is None else int(seed)
    if not inits:
        raise ConfigError("compare_initializations needs at least one initialization")
    resolved = {name: _resolve_init(init) for name, init in inits.items()}
    _check_fit(resolved, mcfg)
    sizes = image_sizes(ds_cfg, int(image_size))
    data = {task: make_downstream_data(ds_cfg, int(image_size), seed, split, task) for task in sizes}
    jobs = [(state, mcfg, ds_cfg, int(image_size), int(s), source)
            for state, source in resolved.values() for s in ds_cfg.seeds]
    workers = min(len(jobs), ds_cfg.workers or usable_cpus())
    if progress is not None:
        progress(f"{', '.join(resolved)} × seeds {','.join(map(str, ds_cfg.seeds))}: {len(jobs)} fine-tunes"
                 + (f" in {workers} processes" if workers > 1 else ""))
    results = iter(_run_jobs(jobs, data, workers))
    rows = []
    for name, (state, source) in resolved.items():
        per_seed = [next(results) for _ in ds_cfg.seeds]
        row: dict[str, Any] = {"init": name, "source": source, **_mean_std(per_seed)}
        spent = sum(r.get("seg_seconds", 0.0) + r.get("cls_seconds", 0.0) for r in per_seed)
        row.update(seeds=list(ds_cfg.seeds), per_seed=per_seed, domain=ds_cfg.domain or "all", split=split,
                   steps=ds_cfg.num_steps(), seg_steps=ds_cfg.seg_warmup_steps + ds_cfg.seg_steps, seed=seed,
                   image_sizes={task: int(d.train.images.shape[-1]) for task, d in data.items()},
                   seconds=spent, random_init=state is None)
        rows.append(row)
    _paired_deltas(rows)
    return rows


def _nan_for_none(stat: tuple[float | None, float | None]) -> tuple[float, float]:
    """A row's scores are floats, NaN where there is none (no value; a std of one seed)."""
    return tuple(math.nan if v is None else v for v in stat)  # type: ignore[return-value]


def _mean_std(per_seed: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in per_seed[0]:
        if key == "seed":
            continue
        m, s = _nan_for_none(mean_std([r.get(key) for r in per_seed]))
        out[key] = m
        out[f"{key}_std"] = s
    return out


def _paired_deltas(rows: list[dict]) -> None:
    """``<score>_delta`` (+ ``_std``) of every row against the first random-init row, seed by seed."""
    ref = next((r for r in rows if r["random_init"]), None)
    if ref is None:
        return
    for row in rows:
        if row is ref:
            continue
        for key in ("dice", "accuracy"):
            if key not in row:
                continue
            diffs = [a.get(key, math.nan) - b.get(key, math.nan) for a, b in zip(row["per_seed"], ref["per_seed"])]
            row[f"{key}_delta"], row[f"{key}_delta_std"] = _nan_for_none(mean_std(diffs))


def _check_fit(resolved: dict, mcfg) -> None:
    probe = build_model(mcfg, num_classes=3)
    for _name, (state, source) in resolved.items():
        if state is None:
            continue
        src = _backbone_source(state)
        own = probe.state_dict()
        heads = tuple(probe.head_prefixes)
        missing = [k for k, v in own.items() if not k.startswith(heads)
                   and (k not in src or tuple(src[k].shape) != tuple(v.shape))]
        if missing:
            raise ConfigError(_misfit(source, missing, len(own)))


def _fmt(v, pct: bool = True) -> str:
    return num(v, ".1f", scale=100.0 if pct else 1.0)


def _pm(mean, std, signed: bool = False) -> str:
    """``mean ± std`` in %; the ``±`` part only where there is a std."""
    return pm(mean, std, ".1f", scale=100.0, sign="+" if signed else "")


def downstream_table(rows: list[dict], title: str | None = None):
    """A rich table of :func:`compare_initializations` rows (scores in %, mean ± std over the
    fine-tune seeds; Δ = paired difference to random init, seed by seed)."""
    if rows:
        r0 = rows[0]
        seeds = ",".join(map(str, r0.get("seeds", [])))
        split = " — VALIDATION split" if r0.get("split") == "val" else ""
        title = title or (f"Downstream fine-tuning ({r0.get('domain', '')} domain{split}; mean ± std over "
                          f"fine-tune seeds {seeds}; Δ: paired difference to random init)")
    table = Table(title=title or "Downstream fine-tuning")
    table.add_column("initialization", style="bold", no_wrap=True)
    seg = any("dice" in r for r in rows)
    cls = any("accuracy" in r for r in rows)
    delta = any("dice_delta" in r or "accuracy_delta" in r for r in rows)
    if seg:
        table.add_column("Dice", justify="right")
        if delta:
            table.add_column("Δ Dice", justify="right")
        for col in ("Dice cath.", "Dice guide.", "mIoU", "Jaccard"):
            table.add_column(col, justify="right")
    if cls:
        table.add_column("tube acc.", justify="right")
        if delta:
            table.add_column("Δ tube acc.", justify="right")
    table.add_column("CPU s", justify="right")  # fine-tuning time summed over the seeds
    best_dice = max((r["dice"] for r in rows if seg and not math.isnan(r.get("dice", math.nan))), default=None)
    for r in rows:
        cells = [str(r["init"])]
        if seg:
            d = _pm(r.get("dice"), r.get("dice_std"))
            if best_dice is not None and r.get("dice") == best_dice and len(rows) > 1:
                d = f"[green]{d}[/green]"
            cells.append(d)
            if delta:
                cells.append(_pm(r.get("dice_delta"), r.get("dice_delta_std"), signed=True)
                             if not r.get("random_init") else "")
            cells += [_fmt(r.get("dice_catheter")), _fmt(r.get("dice_guidewire")), _fmt(r.get("miou")),
                      _fmt(r.get("jaccard"))]
        if cls:
            cells.append(_pm(r.get("accuracy"), r.get("accuracy_std")))
            if delta:
                cells.append(_pm(r.get("accuracy_delta"), r.get("accuracy_delta_std"), signed=True)
                             if not r.get("random_init") else "")
        cells.append(_fmt(r.get("seconds"), pct=False))
        table.add_row(*cells)
    return table


def _json_safe(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def rows_to_json(rows: list[dict]) -> list[dict]:
    """Rows with NaN replaced by None (strict JSON), also inside ``per_seed``."""
    return [_json_safe(r) for r in rows]


