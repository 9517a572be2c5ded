"""``fedsim config``: the reference page generated from the settings dataclasses, and the
resolved config of a run."""

from __future__ import annotations

import yaml

from fedsim.cli import main
from fedsim.commands.config import REFERENCE_FILE, REGENERATE, reference_markdown, reference_sections
from fedsim.config import ExperimentConfig, load_config
from tests.harness import REPO


def test_the_committed_reference_is_the_generated_one():
    committed = (REPO / REFERENCE_FILE).read_text() if (REPO / REFERENCE_FILE).is_file() else ""
    assert committed == reference_markdown(), (
        f"{REFERENCE_FILE} is out of date with the settings dataclasses; regenerate it with `{REGENERATE}`"
    )


def test_every_key_of_every_section_has_a_meaning():
    sections = reference_sections()
    no_summary = [s.path or "top level" for s in sections if not s.summary]
    missing = [k.path for s in sections for k in s.keys if not k.meaning.strip()]
    assert not no_summary, f"section dataclasses without a docstring: {', '.join(no_summary)}"
    assert not missing, (f"config keys without a comment saying what they mean: {', '.join(missing)} "
                         "(write one at the end of the field's line in its dataclass)")


def _leaves(d: dict, prefix: str = ""):
    """Dotted paths of the values of a config dumped to plain data (no default of a mapping-typed
    key is a non-empty mapping, so every non-empty mapping is a section)."""
    for key, value in d.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_key_is_listed_once_and_its_default_is_what_the_config_takes():
    cfg = ExperimentConfig()
    keys = [k for s in reference_sections() for k in s.keys]
    plain = [k for k in keys if "[]" not in k.path]
    assert sorted(k.path for k in plain) == sorted(_leaves(cfg.to_dict()))  # each once
    assert {"train.lr", "fedefm.beta", "faults.dropout[].silo", "log.tensorboard", "data.validation_fraction",
            "fedefm_released.self_weight"} <= {k.path for k in keys}
    for k in plain:  # the documented path and default, written as a config would, leave the config as it is
        assert load_config(None, [f"{k.path}={k.default}"]).to_dict() == cfg.to_dict(), k


def test_list_entry_keys_take_their_documented_defaults():
    sections = {s.path: s for s in reference_sections()}
    entry = {k.path.split("[].")[1]: k.default for k in sections["faults"].keys if k.path.startswith("faults.stragglers[]")}
    assert entry == {"silo": "null", "factor": "2.0", "start": "0", "end": "null", "probability": "1.0"}
    cfg = load_config(None, ["faults.stragglers=[{silo: 1}]"])
    (s,) = cfg.faults.stragglers
    assert (s.factor, s.start, s.end, s.probability) == tuple(yaml.safe_load(entry[k]) for k in
                                                              ("factor", "start", "end", "probability"))


def test_the_reference_shows_types_ranges_and_choices():
    rows = {k.path: k for s in reference_sections() for k in s.keys}
    assert (rows["train.lr"].type, rows["train.lr"].default, rows["train.lr"].allowed) == ("float", "0.001", ">= 0")
    assert rows["fedefm.beta"].allowed == ">= 0 and <= 1"
    assert rows["emd.backend"].allowed == "exact, cvxpylayers, sinkhorn, uniform"
    assert rows["scenario"].type == "str or null" and rows["scenario"].default == "null"
    assert rows["train.eval_silos"].type == "str or int" and rows["train.eval_silos"].allowed == "auto, all or >= 1"
    assert rows["faults.dropout"].type == "list of mappings"
    assert rows["downstream.enabled"].default == "false"  # the experiment's factory, not the dataclass default
    assert rows["fminit.teacher.name"].default == "r50-vit"
    assert rows["data.validation_fraction"].meaning.startswith("share of each silo's training data held out for")
    assert rows["train.optimizer"].meaning.endswith("where SGD(0.05, momentum 0.9) is near 30%")  # a continued comment


def test_the_command_prints_and_writes_the_page(tmp_path, capsys):
    assert main(["config", "--reference"]) == 0
    assert capsys.readouterr().out == reference_markdown()
    out = tmp_path / "ref.md"
    assert main(["config", "--reference", "-o", str(out)]) == 0
    assert out.read_text() == reference_markdown()
    assert main(["config", "--reference", "--set", "rounds=3"]) == 2
    assert "give it no CONFIG or --set" in capsys.readouterr().err


def test_the_resolved_config_loads_back_to_itself(tmp_path, capsys):
    out = tmp_path / "resolved.yaml"
    assert main(["config", "--set", "rounds=3", "--set", "algorithm=gossip", "-o", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["rounds"] == 3 and data["algorithm"] == "gossip" and data["scenario"] == "dfl"  # resolved
    assert load_config(out).to_dict() == data
    assert main(["config", "--set", "roundz=3"]) == 2
    assert "unknown config key 'roundz'" in capsys.readouterr().err
