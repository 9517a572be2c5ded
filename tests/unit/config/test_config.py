"""Experiment config: YAML, dotted overrides, unknown keys are errors."""

from __future__ import annotations

import pytest

from fedsim.config import load_config, parse_override
from fedsim.errors import ConfigError
from tests.harness import REPO


def test_overrides_keep_types_and_reach_nested_keys(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("algorithm: fedavg\nrounds: 7\ntrain:\n  lr: 0.1\n")
    cfg = load_config(path, ["rounds=3", "train.lr=1", "data.root=/x", "accumulation_status=[1, 0, 1, 1]"])
    assert cfg.algorithm == "fedavg" and cfg.rounds == 3
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.data.root == "/x" and cfg.accumulation_status == [1, 0, 1, 1]
    assert load_config(None, ["train.lr=3e-4"]).train.lr == 3e-4  # YAML 1.1 reads this as a string


def test_a_dotted_override_sets_one_entry_of_a_free_form_mapping(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: {name: 'tests.plugin_fixtures:make_net', args: {width: 4, depth: 2}}\n")
    cfg = load_config(path, ["model.args.width=8", "model.args.extra.k=1", "model.args.extra.j=2"])
    assert cfg.model.args == {"width": 8, "depth": 2, "extra": {"k": 1, "j": 2}}
    assert load_config(path, ["model.args={width: 3}"]).model.args == {"width": 3}  # a mapping replaces it


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


@pytest.mark.parametrize("path", sorted((REPO / "launch" / "configs").glob("*.yaml")),
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
            "fminit.alpha", "log.tensorboard", "data.image_size", "data.partition", "data.unseen_fraction",
            "data.validation_fraction", "model.width", "model.norm", "downstream.lr", "downstream.steps",
            "faults.participation", "faults.participants", "faults.sampling", "faults.deadline", "faults.rejoin",
            "faults.on_crash"} <= keys


def _cli(tmp_path, capsys, sets: list[str]) -> str:
    """``fedsim run`` with these overrides: the one error line (asserting exit 2, one line, and
    that nothing was written: no rank started)."""
    from fedsim.cli import main

    out = tmp_path / "runs"
    code = main(["run", "--set", f"output_dir={out}", *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("fedsim: error: ") and "Traceback" not in err
    assert not out.exists(), err
    return err


@pytest.mark.parametrize("key,value", [c for c in _cases() if c[0] in (
    "train.lr", "train.momentum", "fedefm.overseas_steps", "fedefm.beta", "fedefm.temperature", "emd.grid",
    "data.image_size", "model.width", "downstream.batch_size", "faults.participation")], ids=lambda x: str(x))
def test_bad_values_stop_the_cli_before_any_rank_starts(tmp_path, capsys, key, value):
    """The issue's examples as a new user types them: one line naming the key, exit 2."""
    assert f"'{key}'" in _cli(tmp_path, capsys, [f"{key}={value}"])


RING = ["topology=ring-4", "rounds=5", "algorithm=gossip", "compare_with=[]"]
ALL_GONE = "faults.dropout=[" + ", ".join(f"{{silo: {i}, start: 2}}" for i in range(4)) + "]"

CROSS_KEY = {  # case: (overrides, what the line must say)
    "fault silo unknown": (["faults.dropout=[{silo: 9, start: 1}]"], "faults.dropout[0]: silo 9 is not in topology"),
    "fault silo missing": (["faults.stragglers=[{factor: 3}]"], "'faults.stragglers[0].silo' is required"),
    "fault entry key": (["faults.dropout=[{silo: 1, begin: 2}]"], "unknown config key 'faults.dropout[0].begin'"),
    "fault entry type": (["faults.dropout=[{silo: one}]"], "'faults.dropout[0].silo' expects int >= 0 or null"),
    "fault list": (["faults.links=3"], "'faults.links' expects a list of mappings"),
    "window after the run": (["faults.dropout=[{silo: 1, start: 7}]"], "faults.dropout[0].start 7 is outside the "
                             "run (rounds 0..4)"),
    "window end after the run": (["faults.links=[{edge: [0, 1], end: 9}]"], "faults.links[0].end 9 is outside the run"),
    "window backwards": (["faults.dropout=[{silo: 1, start: 3, end: 1}]"], "'faults.dropout[0].end' is 1, before"),
    "fraction 0": (["faults.participation=0"], "'faults.participation' expects float > 0 and <= 1, got 0"),
    "fraction above 1": (["faults.participation=1.5"], "'faults.participation' expects float > 0 and <= 1"),
    "count above silos": (["faults.participants=5"], "faults.participants 5 is more than the 4 silos"),
    "fraction and count": (["faults.participation=0.5", "faults.participants=2"], "give one of them"),
    "no silo left": ([ALL_GONE], "no silo with accumulation status 1 in round 2"),
    "no contributing silo left": (["accumulation_status=[1, 0, 0, 0]", "faults.dropout=[{silo: 0, start: 3, end: 3}]"],
                                  "no silo with accumulation status 1 in round 3"),
    "edge not in graph": (["faults.links=[{edge: [0, 2]}]"], "faults.links[0].edge [0, 2] is not an edge"),
    "edge malformed": (["faults.links=[{edge: [0]}]"], "'faults.links[0].edge' expects two silo ids"),
    "straggler slower than 1": (["faults.stragglers=[{silo: 1, factor: 0.5}]"],
                                "'faults.stragglers[0].factor' expects float >= 1"),
    "probability": (["faults.stragglers=[{silo: 1, probability: 2}]"], "'faults.stragglers[0].probability'"),
    "rejoin theta without Θ": (["algorithm=fedmd", "faults.rejoin=theta"], "faults.rejoin: theta needs a foundation"),
    "faults with pooled data": (["scenario=cll", "faults.participation=0.5"], "faults: scenario cll pools"),
    "domains per silo": (["data.domains=[human, animal]"], "data.domains lists 2 silos but topology"),
    "domain name": (["data.domains=[human, martian, phantom, simulation]"], "martian"),
    "transformer heads": (["algorithm=fedavg", "model.name=r50-vit", "model.vit_heads=3"],
                          "model.vit_dim (128) must be a multiple of 4 * vit_heads"),
    "grid vs feature map": (["algorithm=fedefm", "emd.grid=5", "data.image_size=32"],
                            "use emd.grid <= 4 (the largest this map allows)"),
    "status per silo": (["accumulation_status=[1, 1]"], "accumulation_status has 2 entries but topology"),
}


@pytest.mark.parametrize("key,value,needle", [
    ("algorithm", "sgd", "unknown algorithm 'sgd'; choose one of fedefm"),
    ("compare_with", "[fedsgd]", "compare_with: unknown algorithm 'fedsgd'"),
    ("data.kind", "zip", "data.kind must be one of synthetic, folder, torchvision, python, medmnist, got 'zip'"),
    ("model.name", "vgg", "unknown model 'vgg'; choose one of cnn"),
    ("model.per_silo", "[cnn, vgg]", "unknown model 'vgg'"),
    ("downstream.domain", "mars", "downstream.domain must be one of human"),
    ("downstream.tasks", "[detection]", "downstream.tasks must be a non-empty list from"),
    ("accumulation_status", "[1, 2, 1, 1]", "accumulation_status must be a list of 0/1 values"),
    ("init_from", "/nowhere.pt", "init_from: /nowhere.pt: file not found"),
])
def test_names_from_registries_are_refused_before_any_rank_starts(tmp_path, capsys, key, value, needle):
    """Choices that live in a registry (algorithms, models, data kinds) rather than in a type."""
    assert needle in _cli(tmp_path, capsys, [f"{key}={value}"])


@pytest.mark.parametrize("case", sorted(CROSS_KEY))
def test_cross_key_constraints_are_one_line_before_any_rank_starts(tmp_path, capsys, case):
    overrides, needle = CROSS_KEY[case]
    assert needle in _cli(tmp_path, capsys, RING + overrides)


def test_folder_data_must_match_the_silos_and_hold_out_a_test_set(tmp_path, capsys):
    root = tmp_path / "data"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
    err = _cli(tmp_path, capsys, RING + ["data.kind=folder", f"data.root={root}", "data.domains=null"])
    assert f"data.root {root} has 3 silo folders but the run has 4 silos" in err
    (root / "d").mkdir()
    err = _cli(tmp_path, capsys, RING + ["data.kind=folder", f"data.root={root}", "data.test_fraction=0"])
    assert "data.test_fraction is 0" in err and "nothing would be tested" in err
