"""Experiment configuration: nested dataclasses loaded from YAML, with dotted ``--set`` overrides.

Every component's section is a small dataclass in a module of this package named after it
(:mod:`fedsim.config.data`, :mod:`fedsim.config.emd`, …; the algorithms' in
:mod:`fedsim.algorithms.settings`), re-exported by the component; this module assembles them into
one :class:`ExperimentConfig` and reads YAML. Types say what each key accepts (``Literal``
choices, ``Annotated`` ranges; see :mod:`fedsim.settings`); unknown keys are errors.

Loading and checking a config imports neither torch nor any algorithm: the sections and the
algorithm registry are plain Python, and what only a built model can tell is checked later, in
the plan (:mod:`fedsim.plan`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from fedsim.algorithms import REGISTRY, algorithm_settings, check_algorithm, is_plugin
from fedsim.config.checkpoint import CheckpointConfig
from fedsim.config.compression import CompressionConfig
from fedsim.config.data import DataConfig
from fedsim.config.downstream import DownstreamConfig
from fedsim.config.emd import EMDConfig
from fedsim.config.faults import FaultsConfig
from fedsim.config.fminit import FMInitConfig
from fedsim.config.models import ModelConfig
from fedsim.config.net import NetConfig
from fedsim.config.privacy import PrivacyConfig
from fedsim.errors import ConfigError
from fedsim.plugins import check_combinations
from fedsim.settings import Range, apply

# what `fedsim run` runs without CONFIG: package data, found from any working directory after install
DEFAULT_CONFIG = Path(str(importlib.resources.files("fedsim") / "default.yaml"))
SCENARIOS = ("dfl", "cfl", "cll", "standalone")
TASKS = ("classification", "segmentation")
INITS = ("random", "pretrained", "fm")
AGGREGATIONS = ("mean", "median", "trimmed_mean", "krum")  # fedsim.aggregation: how silos' weights combine


@dataclass
class TrainConfig:
    """Local optimisation shared by every algorithm."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"  # the silos' local optimiser (adamw: torch's AdamW, as
    #                          in the FedEFM authors' released code, whose weight decay is torch's default
    #                          0.01: set train.weight_decay to match); measured: Adam reaches ~70% test
    #                          accuracy in 80 steps on the synthetic data where SGD(0.05, momentum 0.9) is near 30%
    lr: Annotated[float, Range(ge=0)] = 1e-3  # local learning rate α; 0: the silos never move (evaluation-only runs, tests)
    # constant: α throughout; sqrt: the released code's decay, α/√n at a silo's n-th optimiser step
    # (α at steps 0 and 1), counted per step, not per round, and kept in the optimiser's checkpoint
    lr_schedule: Literal["constant", "sqrt"] = "constant"
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # sgd only
    weight_decay: Annotated[float, Range(ge=0)] = 0.0  # L2 penalty of the local optimiser
    batch_size: Annotated[int, Range(ge=1)] = 32  # images per local step (mini-batch ξ_i)
    local_steps: Annotated[int, Range(ge=1)] = 10  # SGD steps a silo takes on its own data per round
    eval_every: Annotated[int, Range(ge=0)] = 1  # evaluate every silo every k rounds (0: only at the end)
    # which silos an evaluation round scores: "all"; N, a seeded sample of N silos drawn afresh each
    # round (the same on any number of ranks); "auto": all up to 50 silos, above that a tenth of
    # them (at least 10, at most 50), so that evaluation stays a minor share of a round (Θ always)
    eval_silos: Literal["auto", "all"] | Annotated[int, Range(ge=1)] = "auto"
    eval_foundation: bool = True  # also form Θ (all-reduce) and evaluate it in those rounds


@dataclass
class LogConfig:
    """Extra outputs of a run (the JSONL metrics, summary and plot are always written)."""

    tensorboard: bool = False  # TensorBoard event files under RUN_DIR/tensorboard/


@dataclass
class _Experiment:
    """One run: an algorithm on a topology over partitioned data. The embedded default is a
    4-silo ring on synthetic data, small enough for a laptop. Each algorithm with settings adds
    its own section (``fedefm:``, ``fedprox:``, …), declared in :mod:`fedsim.algorithms.settings`
    and listed in ``fedsim.algorithms.REGISTRY``."""

    name: str = "default"  # the run's folder: OUTPUT_DIR/NAME (NAME-2, NAME-3, … when it already holds a run)
    algorithm: str = "fedefm"  # a name from fedsim.algorithms.REGISTRY, or your own class as 'module:Class' (docs/extending.md, "Write an algorithm")
    algorithm_args: dict = field(default_factory=dict)  # settings of a plug-in algorithm, checked against its class's Settings dataclass
    scenario: Literal[SCENARIOS] | None = None  # dfl | cfl | cll | standalone; None: the algorithm's own
    topology: str = "ring-4"  # a YAML/GML path, a shipped name (fedsim/topologies/NAME.yaml) or KIND:N
    rounds: Annotated[int, Range(ge=1)] = 5  # communication rounds, numbered 0 … rounds − 1
    seed: Annotated[int, Range(ge=0)] = 0  # fixes the data, the initial models and every random draw
    output_dir: str = "runs"  # folder that holds the run folders
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a GPU per rank with NCCL when CUDA is visible, else the CPU with gloo
    accumulation_status: list[int] | None = None  # ϑ_i per silo (1 = contributes to Θ)
    weight_by_samples: bool = False  # Θ weighted by each silo's sample count as well as ϑ
    aggregation: Literal[AGGREGATIONS] = "mean"  # how weights combine — the CFL server, DFL mixes and Θ: mean |
    #                          median | trimmed_mean | krum, coordinate-wise and weighted by ϑ or the mixing
    #                          weights (docs/algorithms.md, "Robust aggregation"); mean: Σ w_i θ_i / Σ w_i
    aggregation_trim: Annotated[float, Range(ge=0, lt=0.5)] = 0.1  # trimmed_mean: the share β of the weight cut
    #                          at each end, per coordinate (equal weights, βn whole: βn inputs dropped at each end)
    krum_f: Annotated[int, Range(ge=0)] = 1  # krum: the Byzantine inputs f it tolerates; every combine needs
    #                          more than 2f + 2 inputs (checked before the run)
    krum_m: Annotated[int, Range(ge=1)] = 1  # krum: average the m best-scored inputs (multi-Krum); 1: Krum itself
    timeout_s: Annotated[float, Range(gt=0)] = 300.0  # a silo silent for this long is reported as failed
    compare_with: list[str] = field(default_factory=list)  # baselines run after it on the same data (names or plug-ins 'module:Class')
    task: Literal[TASKS] = "classification"  # classification (foundation label) | segmentation (U-Net, Dice)
    init: Literal[INITS] = "random"  # random | pretrained | fm: the common initial model of every silo
    init_from: str | None = None  # a saved state dict every silo starts from instead (any task)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    emd: EMDConfig = field(default_factory=EMDConfig)
    net: NetConfig = field(default_factory=NetConfig)
    downstream: DownstreamConfig = field(default_factory=lambda: DownstreamConfig(enabled=False))
    fminit: FMInitConfig = field(default_factory=FMInitConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # differential privacy (DP-SGD / DP-FedAvg)
    compression: CompressionConfig = field(default_factory=CompressionConfig)  # coding of model messages
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # how often the run's state is saved
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _with_algorithm_sections() -> type:
    """The experiment config with one section per algorithm that has settings (from the
    registry, so adding an algorithm touches its own file, its settings and one registry line)."""
    sections = [(name, settings, field(default_factory=settings))
                for name, (_, _, settings) in REGISTRY.items() if settings]
    cls = dataclasses.make_dataclass("ExperimentConfig", sections, bases=(_Experiment,))
    cls.__module__ = __name__  # picklable as fedsim.config.ExperimentConfig (sent to every rank)
    cls.__doc__ = _Experiment.__doc__
    return cls


ExperimentConfig = _with_algorithm_sections()


#: keys that no longer exist, with what replaces them
RETIRED = {
    "fedefm.sync_every": "FedEFM now aggregates every round by default; use fedefm.aggregate: round "
                         "(the paper) or end (Θ once, after the last round)",
}


#: keys that cannot change a run's results (where it is written, how long a silent peer is waited
#: for, extra outputs, how many processes fine-tune, how often it is checkpointed): they may
#: differ when a run is resumed
RESULT_NEUTRAL = ("name", "output_dir", "timeout_s", "log", "downstream.workers", "checkpoint")


def config_differences(saved: Any, cfg: ExperimentConfig, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """The keys in which a saved config (``config.yaml`` read as a mapping) and ``cfg`` differ, as
    (dotted key, saved value, value now), skipping the keys in ``ignore`` (a key also covers its
    sub-keys). A key the saved file lacks (added to fedsim since) counts as its default: new keys
    default to the old behaviour. A key only the saved file has no longer exists and differs."""
    missing = object()

    def walk(saved: Any, now: Any, default: Any, prefix: str) -> list[tuple[str, Any, Any]]:
        if any(prefix == k or prefix.startswith(k + ".") for k in ignore):
            return []
        if isinstance(now, dict) and isinstance(saved, dict):
            out = []
            for key in list(now) + [k for k in saved if k not in now]:
                d = default.get(key, missing) if isinstance(default, dict) else missing
                out += walk(saved.get(key, d if key in now else missing), now.get(key, missing), d,
                            f"{prefix}.{key}" if prefix else str(key))
            return out
        return [] if saved == now else [(prefix or "config", saved, now)]

    out = walk(saved, cfg.to_dict(), ExperimentConfig().to_dict(), "")
    return [(k, None if a is missing else a, None if b is missing else b) for k, a, b in out]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value parsed as YAML so numbers and lists keep their type)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value (e.g. --set rounds=3), got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The embedded default, updated by a YAML file, then by ``--set`` overrides."""
    cfg = ExperimentConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
        if data is None:  # not the embedded default under another name: say so
            raise ConfigError(f"{path}: the config file is empty; give at least the keys you change (e.g. "
                              "algorithm: fedavg), or leave CONFIG out to run the embedded default")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config is a YAML mapping of keys (algorithm:, topology:, rounds:, …), "
                              f"got a {type(data).__name__}")
        try:
            apply(cfg, data, "", retired=RETIRED)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if "topology" in data:
            cfg.topology = _relative_to(cfg.topology, path.parent)
    for text in overrides or []:
        keys, value = _into_mapping(cfg, *parse_override(text))
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        apply(cfg, nested, "", retired=RETIRED)
    validate_config(cfg)
    return cfg


def _into_mapping(cfg: Any, keys: list[str], value: Any) -> tuple[list[str], Any]:
    """A dotted key that reaches into a free-form mapping (``model.args``, ``algorithm_args``) sets
    one entry of it, keeping the others: ``--set algorithm_args.a=1 --set algorithm_args.b=2``
    gives both (``--set algorithm_args={...}`` still replaces the whole mapping)."""
    obj = cfg
    for n, key in enumerate(keys[:-1]):
        current = getattr(obj, key, None)
        if isinstance(current, dict):
            merged = copy.deepcopy(current)
            entry = merged
            for inner in keys[n + 1 : -1]:
                if not isinstance(entry.get(inner), dict):
                    entry[inner] = {}
                entry = entry[inner]
            entry[keys[-1]] = value
            return keys[: n + 1], merged
        if not dataclasses.is_dataclass(current):
            break
        obj = current
    return keys, value


def _relative_to(topology: str, base: Path) -> str:
    """A topology path in a config file is relative to that file when it exists there."""
    candidate = base / topology
    return str(candidate) if candidate.is_file() else topology


def validate_config(cfg: ExperimentConfig) -> None:
    """What types and ranges cannot say: names from the registries, per-silo lists, cross-key
    constraints. Each section's own ``validate()`` runs too. A built-in algorithm is checked by its
    name (its module is not imported); what only the built model can tell waits for the plan."""
    check_algorithm(cfg.algorithm)  # a built-in's name, or a plug-in class that imports and is an Algorithm
    for name in cfg.compare_with:
        check_algorithm(name, key="compare_with")
    plugins = [n for n in (cfg.algorithm, *cfg.compare_with) if is_plugin(n)]
    if cfg.algorithm_args and not plugins:
        raise ConfigError(f"algorithm_args sets a plug-in algorithm's settings ('module:Class'); algorithm "
                          f"{cfg.algorithm!r} takes its settings from its own section ({cfg.algorithm}:) if it has any")
    for name in plugins:  # each plug-in the run names reads algorithm_args with its own Settings
        algorithm_settings(cfg, name)
    if cfg.accumulation_status is not None and any(v not in (0, 1) for v in cfg.accumulation_status):
        raise ConfigError("accumulation_status must be a list of 0/1 values, one per silo")
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "validate"):
            section.validate()
    if cfg.init != "random" and cfg.task != "segmentation" and cfg.init_from is None:
        raise ConfigError(f"init: {cfg.init} trains a U-Net on the proxy set and needs task: segmentation "
                          f"(or give init_from: PATH)")
    if cfg.task == "segmentation" and cfg.data.label != "route":
        raise ConfigError(f"data.label: {cfg.data.label} sets the foundation class label, and task: segmentation "
                          "trains on the masks; remove data.label or use task: classification")
    if cfg.init_from is not None and not Path(cfg.init_from).expanduser().is_file():
        raise ConfigError(f"init_from: {cfg.init_from}: file not found")
    if cfg.privacy.mode != "none":
        _require("opacus", f"privacy.mode: {cfg.privacy.mode}")
    if cfg.log.tensorboard:
        _require("tensorboard", "log.tensorboard: true")
    check_combinations(cfg)


def _require(module: str, feature: str) -> None:
    """A dependency a feature imports, looked up before any rank starts (one line, not a rank's
    traceback): fedsim's install brings them all, an install without its dependencies may not."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{feature} needs the Python package {module!r}, which is not installed in this environment; "
                          f"pip install -r requirements.txt (or pip install {module})") from None
