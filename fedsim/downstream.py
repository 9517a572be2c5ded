"""Downstream fine-tuning from a foundation model Θ (SPEC §4 "Downstream", issue 5 part 3).

Two tasks on a generated downstream set (one domain, "human" by default):

* **segmentation**: a U-Net (:func:`fedsim.models.build_segmenter`) whose encoder is loaded from
  the foundation state dict (every backbone tensor; the classifier head is not part of the
  encoder's job), the decoder freshly initialised; scored on catheter / guidewire Dice, mIoU and
  per-image Jaccard with background excluded (:mod:`fedsim.metrics`).
* **classification**: a :func:`fedsim.models.build_model` classifier with 3 classes on the
  tube-position label (normal / borderline / abnormal), every backbone tensor copied from the
  foundation, the head (``head_prefixes``) freshly initialised; scored on accuracy.

:func:`compare_initializations` runs both tasks from several initialisations (random, FedAvg Θ,
FedEFM Θ, …) on the *same* downstream data, the same seed for the decoder/head initialisation
and the same batch order, so rows differ only by the initial encoder weights.
Everything is single-process and deterministic for a fixed seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fedsim.errors import ConfigError
from fedsim.losses import segmentation_loss
from fedsim.settings import Range, section_from_dict

__all__ = [
    "DownstreamConfig", "DownstreamData", "TASKS", "compare_initializations", "downstream_table",
    "finetune_classification", "finetune_segmentation", "init_classifier", "init_segmenter", "load_classifier_backbone", "load_foundation_file",
    "make_downstream_data",
]

TASKS = ("segmentation", "classification")


@dataclass
class DownstreamConfig:
    """The ``downstream:`` settings. Defaults (64x64, "cnn" model): both tasks from one
    initialization cost ~60 CPU-seconds (~25-30 s wall on 2 idle cores; the U-Net step dominates).
    60 Adam steps is where a trained foundation's head start is still visible: with 150 steps random
    init caught up (Dice 0.90 vs 0.875 from a weak Θ); with 30 the strong Θ led 0.32 vs 0.15."""

    enabled: bool = True
    domain: str | None = "human"   # downstream domain; None = all four domains, cycled
    train_samples: Annotated[int, Range(ge=1)] = 256
    test_samples: Annotated[int, Range(ge=1)] = 256
    steps: Annotated[int, Range(ge=0)] = 60  # optimizer steps per task (when epochs == 0)
    epochs: Annotated[int, Range(ge=0)] = 0  # > 0: train this many passes over train_samples instead of `steps`
    batch_size: Annotated[int, Range(ge=1)] = 16
    lr: Annotated[float, Range(gt=0)] = 2e-3  # Adam
    seed: Annotated[int, Range(ge=0)] = 0
    tasks: list = field(default_factory=lambda: list(TASKS))

    @classmethod
    def from_dict(cls, d: dict | None) -> DownstreamConfig:
        return section_from_dict(cls, d, "downstream", ConfigError)

    def validate(self) -> None:
        from fedsim.data import DOMAINS

        if self.domain is not None and self.domain not in DOMAINS:
            raise ConfigError(f"downstream.domain must be one of {', '.join(DOMAINS)} (or null for all), "
                              f"got {self.domain!r}")
        for key, lo in (("train_samples", 1), ("test_samples", 1), ("batch_size", 1), ("steps", 0),
                        ("epochs", 0)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"downstream.{key} must be an integer >= {lo}, got {v!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"downstream.lr must be > 0, got {self.lr!r}")
        tasks = list(self.tasks or [])
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise ConfigError(f"downstream.tasks must be a non-empty list from {', '.join(TASKS)}, got {self.tasks!r}")

    def num_steps(self) -> int:
        if self.epochs > 0:
            return self.epochs * math.ceil(self.train_samples / self.batch_size)
        return self.steps


@dataclass
class DownstreamData:
    train: Any   # SiloDataset
    test: Any    # SiloDataset


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
    from fedsim.models import ModelConfig

    if model_cfg is None:
        return ModelConfig()
    if isinstance(model_cfg, dict):
        return ModelConfig.from_dict(model_cfg)
    return model_cfg


def make_downstream_data(ds_cfg: DownstreamConfig, image_size: int, seed: int) -> DownstreamData:
    """The downstream train/test sets: generated from their own seed streams (0xD5, 1/2), so they
    never coincide with a federated run's silo or test images of the same seed."""
    from fedsim.data import DOMAINS, derive_seed, generate

    domains = ds_cfg.domain if ds_cfg.domain is not None else list(DOMAINS)
    train = generate(ds_cfg.train_samples, domains=domains, image_size=image_size,
                     seed=derive_seed(seed, 0xD5, 1), name="downstream-train")
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
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not a readable torch state dict ({first})") from None
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
                   source: str = "foundation"):
    """``(unet, tensors_loaded)``: a U-Net built under ``torch.manual_seed(seed)`` (so the decoder
    is the same for every initialization), its encoder's backbone tensors then overwritten from
    ``init_state`` (all of them or a :class:`ConfigError` naming ``source``)."""
    from fedsim.models import build_segmenter

    torch.manual_seed(seed)
    model = build_segmenter(_model_cfg(model_cfg), num_seg_classes=3, in_channels=in_channels)
    loaded = _load_encoder(model, init_state, source) if init_state is not None else 0
    return model, loaded


def init_classifier(init_state: dict | None, model_cfg=None, seed: int = 0, in_channels: int = 1,
                    source: str = "foundation"):
    """``(classifier, tensors_loaded)``: a 3-class tube-position classifier built under
    ``torch.manual_seed(seed + 1)``, every backbone tensor copied from ``init_state``, the head
    (``head_prefixes``) left at its fresh initialisation."""
    from fedsim.models import build_model

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
    opt = torch.optim.Adam(model.parameters(), lr=lr)
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
    """:func:`fit` for the configured downstream steps/epochs."""
    return fit(model, x_all, y_all, ds_cfg.num_steps(), ds_cfg.batch_size, ds_cfg.lr, batch_seed, loss_fn)


def finetune_segmentation(init_state: dict | None, model_cfg=None, ds_cfg: DownstreamConfig | dict | None = None,
                          data_cfg_or_image_size=64, seed: int | None = None, *, data: DownstreamData | None = None,
                          source: str = "foundation") -> dict:
    """Fine-tune a U-Net whose encoder starts from ``init_state`` (a :func:`build_model` state dict,
    e.g. ``foundation.pt``; None = random) on the downstream set; return test scores:
    ``dice`` / ``miou`` / ``jaccard`` (catheter+guidewire mean), ``dice_catheter``,
    ``dice_guidewire``, ``iou_catheter``, ``iou_guidewire``, ``pixel_accuracy``, ``seg_loss``
    (last 10 steps), ``seg_seconds``, ``encoder_tensors_loaded``."""
    from fedsim.metrics import segmentation_scores

    ds_cfg, mcfg = _ds_cfg(ds_cfg), _model_cfg(model_cfg)
    seed = ds_cfg.seed if seed is None else int(seed)
    data = data or make_downstream_data(ds_cfg, _image_size(data_cfg_or_image_size), seed)
    started = time.perf_counter()
    model, loaded = init_segmenter(init_state, mcfg, seed, data.train.images.shape[1], source)
    losses = _fit(model, data.train.images, data.train.masks, ds_cfg, seed,
                  segmentation_loss)
    pred = _predict(model, data.test.images)
    s = segmentation_scores(pred, data.test.masks, num_classes=3)
    dpc, ipc = s["dice_per_class"], s["iou_per_class"]
    return {
        "dice": s["dice"], "miou": s["miou"], "jaccard": s["jaccard"],
        "dice_catheter": dpc[1], "dice_guidewire": dpc[2], "iou_catheter": ipc[1], "iou_guidewire": ipc[2],
        "pixel_accuracy": s["pixel_accuracy"],
        "seg_loss": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else math.nan,
        "seg_seconds": time.perf_counter() - started,
        "encoder_tensors_loaded": loaded,
    }


def finetune_classification(init_state: dict | None, model_cfg=None, ds_cfg: DownstreamConfig | dict | None = None,
                            data_cfg_or_image_size=64, seed: int | None = None, *,
                            data: DownstreamData | None = None, source: str = "foundation") -> dict:
    """Fine-tune a 3-class :func:`build_model` classifier on the tube-position label, every backbone
    tensor copied from ``init_state`` (None = random), the head fresh; return ``accuracy`` (test),
    ``train_accuracy``, ``cls_loss`` (last 10 steps), ``cls_seconds``, ``backbone_tensors_loaded``."""
    from fedsim.metrics import accuracy

    ds_cfg, mcfg = _ds_cfg(ds_cfg), _model_cfg(model_cfg)
    seed = ds_cfg.seed if seed is None else int(seed)
    data = data or make_downstream_data(ds_cfg, _image_size(data_cfg_or_image_size), seed)
    started = time.perf_counter()
    model, loaded = init_classifier(init_state, mcfg, seed, data.train.images.shape[1], source)
    losses = _fit(model, data.train.images, data.train.tube, ds_cfg, seed + 1, F.cross_entropy)
    return {
        "accuracy": accuracy(_predict(model, data.test.images), data.test.tube),
        "train_accuracy": accuracy(_predict(model, data.train.images), data.train.tube),
        "cls_loss": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else math.nan,
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


def compare_initializations(inits: dict[str, str | Path | dict | None], model_cfg=None,
                            ds_cfg: DownstreamConfig | dict | None = None, image_size: int = 64,
                            seed: int | None = None, progress=None) -> list[dict]:
    """One row per ``{name: init}`` (None = random, a path to ``foundation.pt``, or a state dict):
    ``{"init", "source", <segmentation scores>, <classification scores>, "seconds"}``. Every row
    uses the same downstream data, seed, decoder/head initialisation and batch order. Every file is
    loaded and checked against the model before any training, so a bad path fails fast.
    ``progress``: optional callable(str) told when each row starts."""
    ds_cfg, mcfg = _ds_cfg(ds_cfg), _model_cfg(model_cfg)
    seed = ds_cfg.seed if seed is None else int(seed)
    if not inits:
        raise ConfigError("compare_initializations needs at least one initialization")
    resolved = {name: _resolve_init(init) for name, init in inits.items()}
    _check_fit(resolved, mcfg)
    data = make_downstream_data(ds_cfg, int(image_size), seed)
    rows = []
    for name, (state, source) in resolved.items():
        if progress is not None:
            progress(name)
        started = time.perf_counter()
        row: dict[str, Any] = {"init": name, "source": source}
        if "segmentation" in ds_cfg.tasks:
            row.update(finetune_segmentation(state, mcfg, ds_cfg, image_size, seed, data=data, source=source))
        if "classification" in ds_cfg.tasks:
            row.update(finetune_classification(state, mcfg, ds_cfg, image_size, seed, data=data, source=source))
        row.update(domain=ds_cfg.domain or "all", steps=ds_cfg.num_steps(), seed=seed,
                   seconds=time.perf_counter() - started)
        rows.append(row)
    return rows


def _check_fit(resolved: dict, mcfg) -> None:
    from fedsim.models import build_model

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
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.1f}"


def downstream_table(rows: list[dict], title: str | None = None):
    """A rich table of :func:`compare_initializations` rows (scores in %)."""
    from rich.table import Table

    domain = rows[0].get("domain", "") if rows else ""
    table = Table(title=title or f"Downstream fine-tuning ({domain} domain, {rows[0].get('steps', '?')} steps)"
                  if rows else "Downstream fine-tuning")
    table.add_column("initialization", style="bold", no_wrap=True)
    seg = any("dice" in r for r in rows)
    cls = any("accuracy" in r for r in rows)
    if seg:
        for col in ("Dice", "Dice cath.", "Dice guide.", "mIoU", "Jaccard"):
            table.add_column(col, justify="right")
    if cls:
        table.add_column("tube acc.", justify="right")
    table.add_column("time s", justify="right")
    best_dice = max((r["dice"] for r in rows if seg and not math.isnan(r.get("dice", math.nan))), default=None)
    for r in rows:
        cells = [str(r["init"])]
        if seg:
            d = _fmt(r.get("dice"))
            if best_dice is not None and r.get("dice") == best_dice and len(rows) > 1:
                d = f"[green]{d}[/green]"
            cells += [d, _fmt(r.get("dice_catheter")), _fmt(r.get("dice_guidewire")), _fmt(r.get("miou")),
                      _fmt(r.get("jaccard"))]
        if cls:
            cells.append(_fmt(r.get("accuracy")))
        cells.append(_fmt(r.get("seconds"), pct=False))
        table.add_row(*cells)
    return table


def rows_to_json(rows: list[dict]) -> list[dict]:
    """Rows with NaN replaced by None (strict JSON)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


