"""The downstream sets (``data.py``): the validation split is held-out training images, and the
segmentation images have their own size (the same scenes)."""

from __future__ import annotations

import pytest
import torch

from fedsim.downstream import (
    DownstreamConfig,
    compare_initializations,
    downstream_table,
    finetune_segmentation,
    make_downstream_data,
)
from fedsim.errors import ConfigError
from tests.harness import DOWNSTREAM_MODEL, DOWNSTREAM_SIZE, tiny_downstream


def test_validation_split_is_held_out_training_images():
    ds = tiny_downstream(train_samples=16, test_samples=8)
    full = make_downstream_data(ds, DOWNSTREAM_SIZE, seed=0)
    val = make_downstream_data(ds, DOWNSTREAM_SIZE, seed=0, split="val")
    assert val.split == "val" and len(val.train) == 12 and len(val.test) == 4
    assert torch.equal(val.train.images, full.train.images[:12])
    assert torch.equal(val.test.images, full.train.images[12:])
    assert torch.equal(val.test.masks, full.train.masks[12:])
    with pytest.raises(ConfigError, match="quarter"):
        make_downstream_data(tiny_downstream(train_samples=9, seg_train_samples=8), DOWNSTREAM_SIZE, 0, split="val")
    rows = compare_initializations({"random": None}, DOWNSTREAM_MODEL, ds, DOWNSTREAM_SIZE, seed=0, split="val")
    assert rows[0]["split"] == "val"
    assert "VALIDATION" in downstream_table(rows).title


def test_segmentation_images_have_their_own_size():
    """``downstream.seg_image_size`` renders the segmentation set at its own size (the same scenes,
    by seed) whatever size the caller passes; the classification set stays at the run's size;
    rows say which sizes they were fine-tuned at."""
    ds = tiny_downstream(seg_image_size=48)
    own = make_downstream_data(ds, DOWNSTREAM_SIZE, seed=0)
    assert own.train.images.shape[-2:] == (48, 48) and own.test.masks.shape[-2:] == (48, 48)
    cls = make_downstream_data(ds, DOWNSTREAM_SIZE, seed=0, task="classification")
    assert cls.train.images.shape[-1] == DOWNSTREAM_SIZE
    assert torch.equal(own.train.labels, cls.train.labels) and torch.equal(own.train.tube, cls.train.tube)
    assert make_downstream_data(tiny_downstream(seg_image_size=None), DOWNSTREAM_SIZE, seed=0).train.images.shape[-1] == DOWNSTREAM_SIZE
    rows = compare_initializations({"random": None}, DOWNSTREAM_MODEL, ds, DOWNSTREAM_SIZE)
    assert rows[0]["image_sizes"] == {"segmentation": 48, "classification": DOWNSTREAM_SIZE}
    assert rows[0]["per_seed"][0]["dice"] == finetune_segmentation(None, DOWNSTREAM_MODEL, ds, DOWNSTREAM_SIZE, 0, data=own)["dice"]
    with pytest.raises(ConfigError, match="downstream.seg_image_size"):
        DownstreamConfig.from_dict({"seg_image_size": 8})
