"""Many silos per rank: compact images give bit-identical batches to float storage, data that is not
8-bit stays float, and the sampled evaluation is seeded, sized and checked before any rank."""

from __future__ import annotations

import copy

import pytest
import torch

from fedsim.config import load_config
from fedsim.data import DataConfig, load_federated
from fedsim.data.rank import BatchStream
from fedsim.evaluation import eval_sample, eval_sample_size, evaluate
from fedsim.models import build_model
from tests.harness import TINY


def test_compact_images_give_bit_identical_batches_to_float_storage():
    data = load_federated(DataConfig(samples_per_silo=48, image_size=16, test_samples=8), 2, 0)
    floats = data.train[1]
    compact = copy.deepcopy(floats).compact(keep_masks=True)
    assert floats.images.dtype == torch.float32 and compact.images.dtype == torch.uint8
    assert compact.images.nbytes * 4 == floats.images.nbytes and compact.masks.dtype == torch.uint8
    for target in ("labels", "masks"):
        a = BatchStream(floats, 16, seed=7, device=torch.device("cpu"), target=target)
        b = BatchStream(compact, 16, seed=7, device=torch.device("cpu"), target=target)
        for _ in range(7):  # past the end of an epoch: a reshuffle too
            (xa, ya), (xb, yb) = a.next(), b.next()
            assert xb.dtype == torch.float32 and yb.dtype == torch.int64
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    model = build_model(load_config(None, TINY).model, 6)
    assert evaluate(model, floats, torch.device("cpu")) == evaluate(model, compact, torch.device("cpu"))
    assert copy.deepcopy(floats).compact(keep_masks=False).masks is None


def test_data_that_is_not_8_bit_stays_float():
    data = load_federated(DataConfig(samples_per_silo=8, image_size=16, test_samples=8), 1, 0)
    ds = data.train[0]
    ds.images = ds.images * 0.999  # no longer k / 255
    before = ds.images.clone()
    assert ds.compact().images.dtype == torch.float32 and torch.equal(ds.images, before)


def test_eval_sample_is_seeded_and_sized():
    assert eval_sample_size("auto", 50) == 50 and eval_sample_size("auto", 51) == 10
    assert eval_sample_size("auto", 300) == 30 and eval_sample_size("auto", 1000) == 50
    assert eval_sample_size("all", 1000) == 1000 and eval_sample_size(7, 5) == 5
    a = eval_sample(40, 1000, seed=3, k=2)
    assert a == eval_sample(40, 1000, seed=3, k=2) and len(set(a)) == 40 and a == sorted(a)
    assert a != eval_sample(40, 1000, seed=3, k=3)


def test_bad_eval_silos_is_one_line_before_any_rank(tmp_path):
    from fedsim.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_silos"):
        load_config(None, ["train.eval_silos=0"])
    with pytest.raises(ConfigError, match="eval_silos"):
        load_config(None, ["train.eval_silos=some"])
