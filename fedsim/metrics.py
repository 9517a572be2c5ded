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

The counts and scores are MONAI's (``monai.metrics``: per-image confusion counts, "f1 score" =
Dice, "threat score" = IoU, its NaN-aware mean), summed over the images for the dataset-level
scores; ``tests/test_metrics.py`` keeps the hand-written formulas fedsim used before and checks
that they agree, so past numbers stay comparable.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = ["accuracy", "confusion_matrix", "dice_per_class", "iou_per_class", "mean_dice", "miou",
           "jaccard", "image_counts", "segmentation_scores", "to_labels"]


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


def _monai():
    """MONAI's confusion-matrix metrics. Imported on first use: MONAI imports all of itself (and
    torchvision) at once, seconds and ~300 MB a process that only a segmentation score needs."""
    with warnings.catch_warnings():  # its import warns about torch APIs it uses, not about ours
        warnings.simplefilter("ignore", FutureWarning)
        from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix
        from monai.metrics.utils import do_metric_reduction
        from monai.networks.utils import one_hot

    return get_confusion_matrix, compute_confusion_matrix_metric, do_metric_reduction, one_hot


def _label_maps(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    p = to_labels(pred) if pred.dim() == target.dim() + 1 else pred.long()
    target = target.long()
    if p.dim() == 2:  # one (H, W) image
        p, target = p[None], target[None]
    return p, target


def image_counts(pred: Tensor, target: Tensor, num_classes: int = 3, chunk: int = 64) -> Tensor:
    """(B, num_classes, 4) float64: MONAI's per-image, per-class confusion counts (TP, FP, TN, FN)
    of label maps (or logits) against target label maps, ``chunk`` images one-hot at a time."""
    get_confusion_matrix, _, _, one_hot = _monai()
    p, t = _label_maps(pred, target)
    out = [get_confusion_matrix(one_hot(p[s:s + chunk, None], num_classes),
                                one_hot(t[s:s + chunk, None], num_classes)).double()
           for s in range(0, p.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, num_classes, 4, dtype=torch.float64)


def _per_class(name: str, counts: Tensor) -> Tensor:
    """MONAI's ``name`` ("f1 score" = Dice, "threat score" = IoU) of counts (…, 4); NaN where
    the class is absent from both prediction and target."""
    return _monai()[1](name, counts)


def dice_per_class(pred: Tensor, target: Tensor, num_classes: int = 3) -> Tensor:
    """Dataset-level Dice per class, 2TP / (2TP + FP + FN) over every pixel of every image."""
    return _per_class("f1 score", image_counts(pred, target, num_classes).sum(0))


def iou_per_class(pred: Tensor, target: Tensor, num_classes: int = 3) -> Tensor:
    """Dataset-level IoU per class, TP / (TP + FP + FN) over every pixel of every image."""
    return _per_class("threat score", image_counts(pred, target, num_classes).sum(0))


def _mean(v: Tensor, include_background: bool) -> float:
    v = v if include_background else v[1:]
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else math.nan


def mean_dice(pred: Tensor, target: Tensor, num_classes: int = 3, include_background: bool = False) -> float:
    return _mean(dice_per_class(pred, target, num_classes), include_background)


def miou(pred: Tensor, target: Tensor, num_classes: int = 3, include_background: bool = False) -> float:
    return _mean(iou_per_class(pred, target, num_classes), include_background)


def _jaccard(counts: Tensor, include_background: bool) -> float:
    per_image = _per_class("threat score", counts if include_background else counts[:, 1:])
    # MONAI's "mean": over the classes each image scores, then over the images that score any
    value, scored = _monai()[2](per_image.clone(), "mean")
    return float(value) if float(scored) > 0 else math.nan


def jaccard(pred: Tensor, target: Tensor, num_classes: int = 3, include_background: bool = False) -> float:
    """Mean over images of the per-image class-mean IoU (see module docstring)."""
    return _jaccard(image_counts(pred, target, num_classes), include_background)


def segmentation_scores(pred: Tensor, target: Tensor, num_classes: int = 3,
                        include_background: bool = False) -> dict:
    """``{"dice", "miou", "jaccard", "dice_per_class", "iou_per_class", "pixel_accuracy"}``."""
    p, t = _label_maps(pred, target)
    counts = image_counts(p, t, num_classes)
    d = _per_class("f1 score", counts.sum(0))
    j = _per_class("threat score", counts.sum(0))
    return {
        "dice": _mean(d, include_background),
        "miou": _mean(j, include_background),
        "jaccard": _jaccard(counts, include_background),
        "dice_per_class": d.tolist(),
        "iou_per_class": j.tolist(),
        "pixel_accuracy": float((p == t).float().mean()) if t.numel() else math.nan,
    }
