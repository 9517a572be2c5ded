"""Experiment config: YAML, dotted overrides, unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.config import load_config, parse_override
from fedsim.errors import ConfigError


def test_overrides_keep_types_and_reach_nested_keys(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("algorithm: fedavg\nrounds: 7\ntrain:\n  lr: 0.1\n")
    cfg = load_config(path, ["rounds=3", "train.lr=1", "data.root=/x", "accumulation_status=[1, 0, 1, 1]"])
    assert cfg.algorithm == "fedavg" and cfg.rounds == 3
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.data.root == "/x" and cfg.accumulation_status == [1, 0, 1, 1]
    assert load_config(None, ["train.lr=3e-4"]).train.lr == 3e-4  # YAML 1.1 reads this as a string


@pytest.mark.parametrize("overrides,needle", [
    (["roundz=3"], "unknown config key 'roundz'"),
    (["train.lrr=0.1"], "unknown config key 'train.lrr'"),
    (["rounds=many"], "config key 'rounds' expects int"),
    (["algorithm=sgd"], "unknown algorithm 'sgd'"),
    (["scenario=p2p"], "unknown scenario 'p2p'"),
    (["rounds"], "--set expects key=value"),
    (["emd.backend=magic"], "unknown emd.backend"),
    (["fedprox.mu=-1"], "fedprox.mu must be >= 0"),
    (["moon.temperature=0"], "moon.temperature must be > 0"),
])
def test_bad_overrides_name_the_problem(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("algorithm: gossip\nmodle: {name: cnn}\n")
    with pytest.raises(ConfigError, match=f"{path}: unknown config key 'modle'"):
        load_config(path)


def test_topology_path_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "t.yaml").write_text("silos: 2\nedges: [[0, 1], [1, 0]]\n")
    path = tmp_path / "exp.yaml"
    path.write_text("topology: t.yaml\n")
    assert load_config(path).topology == str(tmp_path / "t.yaml")


def test_parse_override_parses_yaml_values():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("name=x=y") == (["name"], "x=y")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "launch" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_experiment_configs_load_and_resolve(path):
    from fedsim.runner import check_config_against_topology, resolve_topology, scenario_for

    cfg = load_config(path)
    cfg.scenario = scenario_for(cfg)
    check_config_against_topology(cfg, resolve_topology(cfg.topology))
