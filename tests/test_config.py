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
    (["scenario=p2p"], "config key 'scenario' expects one of 'dfl', 'cfl', 'cll', 'standalone' or null, got 'p2p'"),
    (["rounds"], "--set expects key=value"),
    (["emd.backend=magic"], "config key 'emd.backend' expects one of 'exact', 'cvxpylayers', 'sinkhorn', 'uniform'"),
    (["fedprox.mu=-1"], "config key 'fedprox.mu' expects float >= 0, got -1"),
    (["moon.temperature=0"], "config key 'moon.temperature' expects float > 0, got 0"),
    (["fedefm.sync_every=1"], "config key 'fedefm.sync_every' was retired: "),
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
    from fedsim.plan import check_config_against_topology, scenario_for
    from fedsim.topology import resolve_topology

    cfg = load_config(path)
    cfg.scenario = scenario_for(cfg)
    check_config_against_topology(cfg, resolve_topology(cfg.topology))


def _typed_fields(obj, prefix=""):
    """(dotted key, type hint) of every leaf setting of a config, nested sections included."""
    import dataclasses

    from fedsim.settings import field_hints

    hints = field_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _typed_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name]


def _bad_values(hint):
    """Values a setting of this type must refuse: out of its range, outside its choices, of the
    wrong type."""
    import typing

    from fedsim.settings import Range, choices

    out = []
    if typing.get_origin(hint) is typing.Annotated:
        base, *meta = typing.get_args(hint)
        for r in (m for m in meta if isinstance(m, Range)):
            out += [v for v in (r.ge - 1 if r.ge is not None else None, r.gt, r.le + 1 if r.le is not None else None,
                                r.lt) if v is not None]
        hint = base
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
        if typing.get_origin(hint) is typing.Annotated:
            return _bad_values(hint)
    if choices(hint):
        out.append("not-a-choice")
    elif hint in (int, float):
        out.append("abc")
    elif hint is bool:
        out.append("maybe")
    return out


def _cases():
    from fedsim.config import ExperimentConfig

    return [(key, v) for key, hint in _typed_fields(ExperimentConfig()) for v in _bad_values(hint)]


@pytest.mark.parametrize("key,value", _cases(), ids=lambda x: str(x))
def test_every_typed_setting_refuses_a_bad_value_and_names_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}={value}"])
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


def test_the_table_covers_ranges_choices_and_types():
    keys = {k for k, _ in _cases()}
    assert {"train.lr", "train.momentum", "fedefm.beta", "fedefm.temperature", "fedefm.overseas_steps",
            "emd.backend", "emd.grid", "fedefm.mix", "rounds", "timeout_s", "net.access_gbps",
            "fminit.alpha", "log.tensorboard"} <= keys
