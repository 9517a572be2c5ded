"""``paper_regime.py``: its plain loop of the authors' regime and fedsim end with the same Θ, bit
for bit (the loop is the benchmark's reference, so it must compute what fedsim computes)."""

from __future__ import annotations

import pytest
import torch
import yaml

from benchmarks.paper_regime import CONFIGS, fedsim_run, plain_loop
from fedsim.config import load_config

SMALL = {"data": {"samples_per_silo": 8, "test_samples": 16, "image_size": 16},
         "model": {"width": 4}, "emd": {"grid": 2}, "train": {"eval_every": 2}, "checkpoint": {"every": 2}}


@pytest.mark.parametrize("algorithm", ["fedefm_released", "fedefm"])
def test_the_plain_loop_and_fedsim_end_with_the_same_theta(tmp_path, algorithm):
    config = yaml.safe_load(CONFIGS[algorithm].read_text())
    for section, keys in SMALL.items():
        config.setdefault(section, {}).update(keys)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path, ["rounds=3"])
    _, loop_theta, loop_accuracy = plain_loop(cfg, 3)
    _, theta, accuracy = fedsim_run(path, 3, 1, tmp_path / "runs")
    assert theta.keys() == loop_theta.keys()
    assert all(torch.equal(theta[k], loop_theta[k]) for k in theta)
    assert accuracy == loop_accuracy
