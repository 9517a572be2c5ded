"""Classification and segmentation metrics.

Segmentation conventions (the papers report catheter/guidewire scores, not background):

* ``dice`` / ``iou`` per class are *dataset-level*: true/false positives and negatives are summed
  over every pixel of every image, then Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN).
  A class absent from both prediction and target has no score (NaN) and is left out of means.
* ``miou`` = mean of the per-class dataset-level IoU.
* ``jaccard`` = *per-image* Jaccard (IoU over the foreground classes present in that image's
  prediction or target), averaged over images — the per-sample score reported in segmentation
  papers. Images with no foreground in either prediction or target are skipped.
* Background (class 0) is excluded from every mean unless ``include_background=True``.

Inputs may be logits / probabilities (B, C, H, W) or label maps (B, H, W).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["accuracy", "confusion_matrix", "dice_per_class", "iou_per_class", "mean_dice", "miou",
           "jaccard", "segmentation_scores", "to_labels"]


def to_labels(x: Tensor, class_dim: int = 1) -> Tensor:
    """Label map/vector from logits (argmax over ``class_dim``) or pass integer labels through."""
    if x.is_floating_point():
        return x.argmax(dim=class_dim)
    return x.long()


def accuracy(pred: Tensor, target: Tensor) -> float:
    """Top-1 accuracy of logits (B, C) or labels (B,) against labels (B,). Empty input -> nan."""
    p = to_labels(pred) if pred.dim() == 2 else pred.long()
    if target.numel() == 0:
        return math.nan
    return float((p.view(-1) == target.view(-1).long()).float().mean())


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(num_classes, num_classes) int64 counts, rows = target, columns = prediction."""
    p = pred.reshape(-1).long()
    t = target.reshape(-1).long()
    ok = (t >= 0) & (t < num_classes)
    return torch.bincount(t[ok] * num_classes + p[ok], minlength=num_classes ** 2).view(num_classes, num_classes)


def _stats(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    p = to_labels(pred) if pred.dim() == target.dim() + 1 else pred.long()
    cm = confusion_matrix(p, target, num_classes).double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    return tp, fp, fn


def _nan_div(a: Tensor, b: Tensor) -> Tensor:
    return torch.where(b > 0, a / b.clamp_min(1e-12), torch.full_like(a, math.nan))


def dice_per_class(pred: Tensor, target: Tensor, num_classes: int = 3) -> Tensor:
    tp, fp, fn = _stats(pred, target, num_classes)
    return _nan_div(2 * tp, 2 * tp + fp + fn)


def iou_per_class(pred: Tensor, target: Tensor, num_classes: int = 3) -> Tensor:
    tp, fp, fn = _stats(pred, target, num_classes)
    return _nan_div(tp, tp + fp + fn)


def _mean(v: Tensor, include_background: bool) -> float:
    v = v if include_background else v[1:]
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else math.nan


def mean_dice(pred: Tensor, target: Tensor, num_classes: int = 3, include_background: bool = False) -> float:
    return _mean(dice_per_class(pred, target, num_classes), include_background)


def miou(pred: Tensor, target: Tensor, num_classes: int = 3, include_background: bool = False) -> float:
    return _mean(iou_per_class(pred, target, num_classes), include_background)


def jaccard(pred: Tensor, target: Tensor, num_classes: int = 3, include_background: bool = False) -> float:
    """Mean over images of the per-image class-mean IoU (see module docstring)."""
    p = to_labels(pred) if pred.dim() == target.dim() + 1 else pred.long()
    if p.dim() == 2:
        p, target = p[None], target[None]
    scores = []
    for i in range(p.shape[0]):
        s = _mean(iou_per_class(p[i], target[i], num_classes), include_background)
        if not math.isnan(s):
            scores.append(s)
    return sum(scores) / len(scores) if scores else math.nan


def segmentation_scores(pred: Tensor, target: Tensor, num_classes: int = 3,
                        include_background: bool = False) -> dict:
    """``{"dice", "miou", "jaccard", "dice_per_class", "iou_per_class", "pixel_accuracy"}``."""
    p = to_labels(pred) if pred.dim() == target.dim() + 1 else pred.long()
    d = dice_per_class(p, target, num_classes)
    j = iou_per_class(p, target, num_classes)
    return {
        "dice": _mean(d, include_background),
        "miou": _mean(j, include_background),
        "jaccard": jaccard(p, target, num_classes, include_background),
        "dice_per_class": d.tolist(),
        "iou_per_class": j.tolist(),
        "pixel_accuracy": float((p == target).float().mean()) if target.numel() else math.nan,
    }
