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


# ---- the hand-written formulas fedsim used before MONAI computed these scores -------------------
# Kept verbatim (in substance) as the independent reference: past runs' numbers were computed with
# them, so the scores fedsim reports now must equal them on any input.

def _ref_cm(p, t, c):
    ok = (t >= 0) & (t < c)
    return torch.bincount(t[ok].reshape(-1) * c + p[ok].reshape(-1), minlength=c * c).view(c, c).double()


def _ref_per_class(p, t, c):
    cm = _ref_cm(p.long(), t.long(), c)
    tp = cm.diag()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    nan = torch.full_like(tp, math.nan)
    dice = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1e-12), nan)
    iou = torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp_min(1e-12), nan)
    return dice, iou


def _ref_mean(v, include_background):
    v = v if include_background else v[1:]
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else math.nan


def _ref_jaccard(p, t, c, include_background):
    if p.dim() == 2:
        p, t = p[None], t[None]
    scores = [_ref_mean(_ref_per_class(p[i], t[i], c)[1], include_background) for i in range(p.shape[0])]
    scores = [s for s in scores if not math.isnan(s)]
    return sum(scores) / len(scores) if scores else math.nan


def _same(a, b, tol=1e-6):
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def _cases():
    g = torch.Generator().manual_seed(7)
    cases = [(Pr, T, 3), (T, T, 3), (torch.zeros(3, 3, dtype=torch.long), T, 3)]
    for b, h, w, c in ((4, 16, 16, 3), (3, 9, 7, 3), (2, 12, 12, 5)):
        target = torch.randint(0, c, (b, h, w), generator=g)
        target[0] = 0  # an image with no foreground in the target
        logits = torch.randn(b, c, h, w, generator=g)
        logits[0, 0] += 10  # ... nor in the prediction: skipped by the per-image Jaccard
        logits[1, c - 1] -= 10  # a class the prediction never gives in image 1
        cases.append((logits, target, c))
        cases.append((logits.argmax(1), target, c))
    target = torch.zeros(2, 6, 6, dtype=torch.long)
    cases.append((torch.zeros_like(target), target, 3))  # background only everywhere: no foreground score
    return cases


@pytest.mark.parametrize("case", range(len(_cases())))
@pytest.mark.parametrize("include_background", [False, True])
def test_scores_equal_the_handwritten_formulas(case, include_background):
    pred, target, c = _cases()[case]
    labels = pred.argmax(1) if pred.is_floating_point() else pred
    dice, iou = _ref_per_class(labels, target, c)
    assert _same(dice_per_class(pred, target, c).tolist(), dice.tolist())
    assert _same(iou_per_class(pred, target, c).tolist(), iou.tolist())
    assert _same(mean_dice(pred, target, c, include_background), _ref_mean(dice, include_background))
    assert _same(miou(pred, target, c, include_background), _ref_mean(iou, include_background))
    assert _same(jaccard(pred, target, c, include_background), _ref_jaccard(labels, target, c, include_background))
    s = segmentation_scores(pred, target, c, include_background)
    assert _same(s["dice"], _ref_mean(dice, include_background))
    assert _same(s["miou"], _ref_mean(iou, include_background))
    assert _same(s["jaccard"], _ref_jaccard(labels, target, c, include_background))
    assert _same(s["dice_per_class"], dice.tolist()) and _same(s["iou_per_class"], iou.tolist())
    assert _same(s["pixel_accuracy"], float((labels == target).float().mean()))
