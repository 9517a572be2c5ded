"""One fine-tune of one task from one initialization, scored: the U-Net on catheter / guidewire
masks, the classifier on the tube-position label."""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from fedsim.config.downstream import DownstreamConfig
from fedsim.downstream.data import DownstreamData, downstream_config, image_size_of, make_downstream_data
from fedsim.downstream.train import fit_classifier, fit_segmenter
from fedsim.downstream.weights import init_classifier, init_segmenter, model_config
from fedsim.metrics import accuracy, segmentation_scores


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The argmax class of every image (segmentation: of every pixel), in eval mode."""
    model.eval()
    out = [model(images[s:s + batch_size]).argmax(1) for s in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


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
    ds_cfg, mcfg = downstream_config(ds_cfg), model_config(model_cfg)
    data = data or make_downstream_data(ds_cfg, image_size_of(data_cfg_or_image_size), ds_cfg.seed)
    started = time.perf_counter()
    model, loaded = init_segmenter(init_state, mcfg, int(seed), data.train.images.shape[1], source,
                                   ds_cfg.seg_raw_branch)
    n = min(ds_cfg.seg_train_samples, len(data.train))
    losses = fit_segmenter(model, data.train.images[:n], data.train.masks[:n], ds_cfg, int(seed))
    pred = predict(model, data.test.images)
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
    ds_cfg, mcfg = downstream_config(ds_cfg), model_config(model_cfg)
    data = data or make_downstream_data(ds_cfg, image_size_of(data_cfg_or_image_size), ds_cfg.seed,
                                        task="classification")
    started = time.perf_counter()
    model, loaded = init_classifier(init_state, mcfg, int(seed), data.train.images.shape[1], source)
    losses = fit_classifier(model, data.train.images, data.train.tube, ds_cfg, int(seed) + 1, F.cross_entropy)
    return {
        "accuracy": accuracy(predict(model, data.test.images), data.test.tube),
        "train_accuracy": accuracy(predict(model, data.train.images), data.train.tube),
        "cls_loss": _tail_mean(losses),
        "cls_seconds": time.perf_counter() - started,
        "backbone_tensors_loaded": loaded,
    }
