"""The labels are in the pixels: small models learn them in 2 epochs on 1,000 images.

Measured (1 thread, seeds as below, 400 test images, default "cnn" with GroupNorm(1 ch/group),
Adam 3e-3, batch 16, 2 epochs): domain accuracy 0.99 (chance 0.25), foundation-label accuracy
0.87 (chance 0.167); U-Net (cnn width 8) catheter+guidewire Dice 0.84 (catheter 0.91, guidewire
0.77) where an all-background prediction scores 0. Thresholds (0.80, 0.50, 0.60 / 0.70 / 0.40)
leave a wide margin for platform differences.
"""

import pytest
import torch
import torch.nn.functional as F

from fedsim.data import DOMAINS, generate
from fedsim.metrics import accuracy, segmentation_scores
from fedsim.models import ModelConfig, build_model, build_segmenter


@pytest.fixture(scope="module")
def data():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield generate(1000, domains=list(DOMAINS), image_size=64, seed=1), generate(
        400, domains=list(DOMAINS), image_size=64, seed=2)
    torch.set_num_threads(threads)


def _fit(model, x, loss_fn, epochs=2, bs=16, lr=3e-3):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], bs):
            idx = perm[i:i + bs]
            loss = loss_fn(model(x[idx]), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


@pytest.mark.parametrize("target,num,threshold", [("domain", 4, 0.80), ("labels", 6, 0.50)])
def test_cnn_learns_domain_and_foundation_label(data, target, num, threshold):
    tr, te = data
    torch.manual_seed(0)
    y = getattr(tr, target)
    m = _fit(build_model(ModelConfig(), num), tr.images, lambda out, idx: F.cross_entropy(out, y[idx]))
    with torch.no_grad():
        acc = accuracy(m(te.images), getattr(te, target))
    assert acc > threshold, f"{target} accuracy {acc:.3f} (chance {1 / num:.3f})"


def test_unet_segments_catheter_and_guidewire(data):
    tr, te = data
    torch.manual_seed(0)
    w = torch.tensor([1.0, 2.0, 4.0])
    s = _fit(build_segmenter(ModelConfig(width=8)), tr.images,
             lambda out, idx: F.cross_entropy(out, tr.masks[idx], weight=w))
    with torch.no_grad():
        logits = s(te.images)
    scores = segmentation_scores(logits, te.masks)
    background = segmentation_scores(torch.zeros_like(te.masks), te.masks)
    assert background["dice"] == 0.0
    assert scores["dice_per_class"][1] > 0.7, scores
    # the guidewire (a 1-pixel line at 64 px, ~0.3% of the pixels): after 2 epochs whether its
    # probability already tops the background's is a matter of the seed (Dice 0 at 5 of the seeds
    # 0-8 with this recipe, measured with fedsim's own decoder and MONAI's blocks alike), so the
    # test asks whether the U-Net has learnt where the wire is:
    # its guidewire probability ranks guidewire pixels above the others (AUROC; 0.5 = chance)
    p = logits.softmax(1)[:, 2].flatten()
    is_wire = (te.masks == 2).flatten()
    ranks = p.argsort().argsort().double() + 1
    n_pos, n_neg = int(is_wire.sum()), int((~is_wire).sum())
    auroc = (ranks[is_wire].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    assert auroc > 0.95, (float(auroc), scores)
