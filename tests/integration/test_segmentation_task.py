"""``task: segmentation``: silos train U-Nets on (image, mask) batches; a distributed FedAvg run on
real gloo ranks equals a sequential single-process re-computation, and bad settings are one-line
ConfigErrors (exit 2 from the CLI).

The checks that need no process: tests/unit/test_segmentation_task.py."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fedsim.data.rank import BatchStream, silo_seed
from fedsim.evaluation import evaluate_segmentation
from fedsim.federation import train_steps
from fedsim.models import build_segmenter
from fedsim.optim import make_optimizer
from tests.harness import (
    assert_close_up_to_adam_outliers,
    assign,
    flat,
    sequential_setup,
    soft_dice_reference,
)
from tests.integration.harness import run_distributed

SEG = ["task=segmentation", "topology=ring-4"]


def seg_reference_models(overrides):
    """Silo U-Nets from the run's seed, mask streams, CE + soft Dice written out here."""
    cfg, topo, _models, _opts, streams = sequential_setup(overrides)
    models, opts = [], []
    for i in range(topo.num_silos):
        torch.manual_seed(cfg.seed)
        m = build_segmenter(cfg.model, 3)
        models.append(m)
        opts.append(make_optimizer(m, cfg))
        streams[i] = BatchStream(streams[i].dataset, cfg.train.batch_size, silo_seed(cfg.seed, i),
                                 torch.device("cpu"), target="masks")
    loss = lambda m, x, y: F.cross_entropy(m(x), y) + soft_dice_reference(m(x), y)  # noqa: E731
    return cfg, topo, models, opts, streams, loss


def test_segmentation_fedavg_matches_sequential_mean(tmp_path):
    overrides = SEG + ["algorithm=fedavg", "name=s"]
    got = run_distributed(tmp_path, overrides)
    cfg, topo, models, opts, streams, loss = seg_reference_models(overrides)
    start = flat(models[0]).clone()
    for _ in range(cfg.rounds):
        for i in range(topo.num_silos):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps, loss)
        mean = torch.stack([flat(m) for m in models]).mean(0)
        for m in models:
            assign(m, mean)
    assert (flat(models[0]) - start).abs().max() > 1e-3  # the U-Nets did train
    assert len(got) == topo.num_silos
    for i, model in enumerate(models):
        keys = list(model.state_dict())
        assert len(got[i]) == len(keys) and any(k.startswith("up.") for k in keys)  # a U-Net was trained
        for a, b in zip(got[i], model.state_dict().values()):
            # the all-reduce sums in another order than the reference; on the 8-bit synthetic data
            # Adam makes up to 2 of 576 weights differ by 2.6e-5 (the rest within 1e-5)
            assert_close_up_to_adam_outliers(a, b, outliers=max(1, a.numel() // 200))
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["metric"] == "dice" and summary["task"] == "segmentation"
    assert summary["foundation_dice"] == summary["foundation_accuracy"]
    # Θ's Dice is the test-set Dice of the mean model, recomputed here
    ref = build_segmenter(cfg.model, 3)
    assign(ref, torch.stack([flat(m) for m in models]).mean(0))
    from fedsim.data import load_federated
    from fedsim.metrics import mean_dice

    test = load_federated(cfg.data, topo.num_silos, cfg.seed).test
    with torch.no_grad():
        pred = ref.eval()(test.images).argmax(1)
    assert summary["foundation_dice"] == pytest.approx(mean_dice(pred, test.masks, 3), abs=1e-6)
    assert evaluate_segmentation(ref, test, torch.device("cpu"))[1] == pytest.approx(summary["foundation_dice"],
                                                                                      abs=1e-6)
