"""The ``downstream:`` section's checks: bad settings are one-line config errors."""

from __future__ import annotations

import pytest

from fedsim.downstream import (
    DownstreamConfig,
)
from fedsim.errors import ConfigError


def test_config_validation():
    with pytest.raises(ConfigError, match="downstream.domain"):
        DownstreamConfig.from_dict({"domain": "mars"})
    with pytest.raises(ConfigError, match=r"unknown config key .downstream\."):
        DownstreamConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="tasks"):
        DownstreamConfig.from_dict({"tasks": ["detection"]})
    assert DownstreamConfig(epochs=2, train_samples=10, batch_size=4).num_steps() == 6
    for bad in ([], [0, 0], [-1], "0,1"):
        with pytest.raises(ConfigError, match="downstream.seeds"):
            DownstreamConfig.from_dict({"seeds": bad})
    with pytest.raises(ConfigError, match="seg_train_samples"):
        DownstreamConfig.from_dict({"train_samples": 8, "seg_train_samples": 16})
