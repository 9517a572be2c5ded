"""Your own algorithm from outside the package (``algorithm: "module:Class"``): ``algorithm.args``
need a plug-in, and a plug-in can be a baseline (``compare_with``)."""

from __future__ import annotations

import pytest

from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.plan import experiment_plans
from tests.harness import REPO

EXAMPLE = REPO / "launch" / "plugin_example"


def test_algorithm_args_need_a_plugin():
    with pytest.raises(ConfigError, match="algorithm_args sets a plug-in algorithm's settings"):
        load_config(None, ["algorithm=fedavg", "algorithm_args={momentum: 0.5}"])


def test_a_plugin_can_be_a_baseline(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    cfg = load_config(EXAMPLE / "experiment.yaml", ["compare_with=[my_algorithm:ServerMomentum]",
                                                     "algorithm_args={momentum: 0.3}"])
    main, baseline = experiment_plans(cfg, tmp_path / "run", 2)
    assert baseline.run_dir == tmp_path / "run" / "baselines" / "my_algorithm.ServerMomentum"
    assert baseline.label == "FedAvgM (CFL)" and main.label == "FedAvg (CFL)"
