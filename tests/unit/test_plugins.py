"""Python plug-ins (a model factory and a data factory defined in tests/plugin_fixtures.py): pooled
plug-in data is partitioned, and what cannot work is refused in one line before any rank starts."""

from __future__ import annotations

import pytest
import torch

from fedsim.config import load_config
from fedsim.errors import ConfigError
from tests import plugin_fixtures as fx
from tests.harness import PLUGIN, assert_bad_plugin_is_one_line


def test_pooled_plugin_data_is_partitioned(tmp_path):
    from fedsim.data import DataConfig, load_federated

    cfg = DataConfig(kind="python", factory="tests.plugin_fixtures:load", args={"pooled": True, "n": 30},
                     partition="dirichlet", dirichlet_alpha=0.3, label_noise=0.2)
    fd = load_federated(cfg, 3, seed=1)
    pool, _ = fx.load(num_silos=3, seed=1, pooled=True, n=30)
    assert sum(len(d) for d in fd.train) == len(pool) == 90
    assert sorted(torch.cat([d.clean_labels for d in fd.train]).tolist()) == sorted(pool.labels.tolist())
    assert any(bool((d.labels != d.clean_labels).any()) for d in fd.train)
    sizes = [len(d) for d in fd.train]
    assert max(sizes) > min(sizes)  # label skew, not an even split




@pytest.mark.parametrize("case, message", [
    ("model.name=nosuch_pkg_xyz.models:make_net", "model.name: cannot import module 'nosuch_pkg_xyz.models'"),
    ("model.name=tests.plugin_fixtures:nope", "model.name: module 'tests.plugin_fixtures' has no attribute 'nope'"),
    ("data.factory=tests.plugin_fixtures:missing", "data.factory: module 'tests.plugin_fixtures' has no attribute"),
])
def test_a_bad_plugin_is_one_line_and_exit_2(tmp_path, capsys, case, message):
    """A plug-in that does not import is refused before any rank starts."""
    assert_bad_plugin_is_one_line(tmp_path, capsys, case, message)


@pytest.mark.parametrize("extra, message", [
    (["downstream.enabled=true"], "set downstream.enabled: false"),
    (["algorithm=feddf"], "algorithm feddf distils on a public set"),
    (["compare_with=[mdhfl]"], "algorithm mdhfl distils on a public set"),
    (["task=segmentation"], "task: segmentation needs per-pixel masks; data.kind python has none"),
    (["task=segmentation", "init=fm", "data.kind=synthetic", "data.channels=3", "model.name=cnn"],
     "init: fm trains on the grayscale synthetic proxy set"),
])
def test_what_your_own_data_cannot_serve_is_refused_before_any_rank(extra, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, PLUGIN + ["algorithm=fedavg"] + extra)


def test_segmentation_needs_a_builtin_encoder():
    with pytest.raises(ConfigError, match="U-Net on a built-in encoder"):
        load_config(None, ["task=segmentation", "algorithm=fedavg", "model.name=tests.plugin_fixtures:make_net"])
