"""Metrics against hand-computed cases."""

import math

import pytest
import torch

from fedsim.metrics import (
    accuracy,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    jaccard,
    mean_dice,
    miou,
    segmentation_scores,
)


def test_accuracy_logits_and_labels():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, 1, 2])
    assert accuracy(logits, target) == pytest.approx(0.5)
    assert accuracy(torch.tensor([0, 1, 1, 2]), target) == 1.0
    assert math.isnan(accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))


# target / prediction on a 3x3 image, classes 0 bg, 1 catheter, 2 guidewire
T = torch.tensor([[0, 1, 1],
                  [0, 1, 2],
                  [0, 0, 2]])
Pr = torch.tensor([[0, 1, 0],
                   [1, 1, 2],
                   [0, 0, 0]])
# class 1: TP 2 (0,1),(1,1); FP 1 (1,0); FN 1 (0,2)  -> Dice 4/6, IoU 2/4
# class 2: TP 1 (1,2); FP 0; FN 1 (2,2)               -> Dice 2/3, IoU 1/2
# class 0: TP 3 (0,0),(2,0),(2,1); FP 2 (0,2),(2,2); FN 1 (1,0) -> Dice 6/9, IoU 3/6


def test_confusion_matrix():
    cm = confusion_matrix(Pr, T, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 2, 0], [1, 0, 1]]


def test_dice_iou_per_class():
    assert dice_per_class(Pr, T, 3).tolist() == pytest.approx([6 / 9, 4 / 6, 2 / 3])
    assert iou_per_class(Pr, T, 3).tolist() == pytest.approx([3 / 6, 2 / 4, 1 / 2])
    assert mean_dice(Pr, T) == pytest.approx((4 / 6 + 2 / 3) / 2)
    assert mean_dice(Pr, T, include_background=True) == pytest.approx((6 / 9 + 4 / 6 + 2 / 3) / 3)
    assert miou(Pr, T) == pytest.approx(0.5)
    assert miou(Pr, T, include_background=True) == pytest.approx(0.5)


def test_logits_input_equals_labels_input():
    logits = torch.nn.functional.one_hot(Pr, 3).permute(2, 0, 1).float()[None] * 5
    assert mean_dice(logits, T[None]) == pytest.approx(mean_dice(Pr[None], T[None]))


def test_absent_class_is_ignored_and_perfect_is_one():
    t = torch.tensor([[0, 1], [0, 1]])
    d = dice_per_class(t, t, 3)
    assert d[0] == 1 and d[1] == 1 and math.isnan(d[2])
    assert mean_dice(t, t) == 1.0
    assert miou(torch.zeros(2, 2, dtype=torch.long), t) == 0.0
    assert math.isnan(mean_dice(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long)))


def test_jaccard_is_per_image_mean():
    # image A: perfect (IoU 1 for class 1); image B: class 1 IoU 1/3 (TP 1, FP 1, FN 1)
    a_t = torch.tensor([[1, 0], [0, 0]])
    b_t = torch.tensor([[1, 1], [0, 0]])
    b_p = torch.tensor([[1, 0], [1, 0]])
    pred, target = torch.stack([a_t, b_p]), torch.stack([a_t, b_t])
    assert jaccard(pred, target) == pytest.approx((1 + 1 / 3) / 2)
    # dataset-level IoU pools the pixels instead: TP 2, FP 1, FN 1 -> 0.5
    assert miou(pred, target) == pytest.approx(0.5)
    # an image with no foreground anywhere is skipped
    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    assert jaccard(torch.cat([pred, empty]), torch.cat([target, empty])) == pytest.approx((1 + 1 / 3) / 2)


def test_segmentation_scores_keys():
    s = segmentation_scores(Pr[None], T[None])
    assert set(s) == {"dice", "miou", "jaccard", "dice_per_class", "iou_per_class", "pixel_accuracy"}
    assert s["pixel_accuracy"] == pytest.approx(6 / 9)
    assert s["jaccard"] == pytest.approx(0.5)
