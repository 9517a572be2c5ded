"""Privacy settings are checked before anything trains: one clear line."""

from __future__ import annotations

import pytest

from fedsim.errors import ConfigError
from fedsim.experiment import resolve_config

TINY = ["rounds=2", "train.local_steps=2", "train.batch_size=8", "data.samples_per_silo=32",
        "data.test_samples=16", "data.image_size=16", "model.width=4", "compare_with=[]",
        "downstream.enabled=false", "emd.grid=2"]
SAMPLE = ["privacy.mode=sample", "privacy.noise_multiplier=1", "privacy.delta=1e-3"]


@pytest.mark.parametrize("overrides,needle", [
    (SAMPLE + ["privacy.noise_multiplier=-1"], "config key 'privacy.noise_multiplier' expects float >= 0 or null"),
    (SAMPLE + ["privacy.max_grad_norm=0"], "config key 'privacy.max_grad_norm' expects float > 0"),
    (SAMPLE + ["privacy.delta=0.05"], "privacy.delta 0.05 is not below 1/n for silo"),
    (SAMPLE + ["privacy.target_epsilon=3"], "needs exactly one of privacy.noise_multiplier"),
    (["privacy.mode=sample"], "needs exactly one of privacy.noise_multiplier"),
    (["privacy.mode=sample", "privacy.target_epsilon=0.01", "privacy.delta=1e-3"],
     "privacy.target_epsilon 0.01 cannot be reached in 2 rounds"),
    (SAMPLE + ["algorithm=fedprox"], "privacy.mode sample is not available for algorithm 'fedprox': its proximal"),
    (SAMPLE + ["model.norm=batch"], "Opacus cannot compute per-sample gradients of model 'cnn' (BatchNorm"),
    (SAMPLE + ["model.name=r50-vit"], "Opacus cannot compute per-sample gradients of model 'r50-vit'"),
    (SAMPLE + ["algorithm=fedavg", "task=segmentation"], "privacy.mode sample needs task: classification"),
    (["privacy.mode=client", "privacy.noise_multiplier=1", "privacy.delta=0.1"],
     "privacy.mode client is not available for algorithm 'fedefm'"),
    (["privacy.mode=client", "privacy.noise_multiplier=1", "privacy.delta=0.1", "algorithm=fedavg",
      "scenario=standalone"], "scenario standalone has no server"),
    (["privacy.mode=client", "privacy.noise_multiplier=1", "privacy.delta=0.3", "algorithm=fedavg"],
     "privacy.delta 0.3 is not below 1/4"),
    (["privacy.mode=client", "privacy.noise_multiplier=1", "privacy.delta=0.1", "algorithm=fedavg",
      "weight_by_samples=true"], "set weight_by_samples: false"),
])
def test_bad_privacy_settings_are_one_line(overrides, needle):
    with pytest.raises(ConfigError) as err:
        resolve_config(None, TINY + overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_baseline_that_cannot_be_private_fails_before_training():
    with pytest.raises(ConfigError, match="compare_with: privacy.mode sample is not available for algorithm 'fedprox'"):
        resolve_config(None, TINY + SAMPLE + ["compare_with=[fedprox]"])
