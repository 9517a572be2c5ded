"""One fine-tune, scored (``finetune.py``): the scores are fedsim.metrics on the prediction, and
training beats no training."""

from __future__ import annotations

import math

from fedsim.downstream import (
    finetune_segmentation,
)
from tests.harness import DOWNSTREAM_MODEL, DOWNSTREAM_SIZE, tiny_downstream


def test_segmentation_scores_follow_fedsim_metrics(monkeypatch, data):
    """The reported numbers are fedsim.metrics on the argmax prediction: forcing a perfect
    prediction gives Dice = mIoU = Jaccard = 1 for catheter and guidewire."""
    import fedsim.downstream.finetune as D

    monkeypatch.setattr(D, "predict", lambda model, images, batch_size=64: data.test.masks.clone())
    r = finetune_segmentation(None, DOWNSTREAM_MODEL, tiny_downstream(steps=1), DOWNSTREAM_SIZE, 0, data=data)
    assert r["dice"] == r["miou"] == r["jaccard"] == 1.0
    assert r["dice_catheter"] == r["dice_guidewire"] == 1.0


def test_training_improves_over_no_training(data):
    """Reliable learning signal: 15 steps beat the untrained network on Dice."""
    before = finetune_segmentation(None, DOWNSTREAM_MODEL, tiny_downstream(seg_warmup_steps=0, seg_steps=0), DOWNSTREAM_SIZE, 0, data=data)
    after = finetune_segmentation(None, DOWNSTREAM_MODEL, tiny_downstream(seg_warmup_steps=5, seg_steps=10), DOWNSTREAM_SIZE, 0, data=data)
    assert after["dice"] > (0.0 if math.isnan(before["dice"]) else before["dice"])
