"""Experiment configuration: nested dataclasses loaded from YAML, with dotted ``--set`` overrides.

Every component owns a small dataclass; unknown keys are errors (a typo must not silently fall
back to a default).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedsim.errors import ConfigError

ALGORITHMS = ("fedefm", "gossip", "fedavg", "fedprox", "moon", "feddf", "fedmd", "mdhfl")
# what `fedsim run` runs without CONFIG: package data, found from any working directory after install
DEFAULT_CONFIG = Path(str(importlib.resources.files("fedsim") / "default.yaml"))
SCENARIOS = ("dfl", "cfl", "cll", "standalone")
TASKS = ("classification", "segmentation")
INITS = ("random", "pretrained", "fm")


@dataclass
class TrainConfig:
    """Local optimisation shared by every algorithm."""

    optimizer: str = "adam"  # adam | sgd (measured: Adam reaches ~70% test accuracy in 80 steps
    #                          on the synthetic data where SGD(0.05, momentum 0.9) is near 30%)
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    batch_size: int = 32
    local_steps: int = 10  # SGD steps a silo takes on its own data per round
    eval_every: int = 1  # evaluate every silo on the test set every k rounds (0: only at the end)
    eval_foundation: bool = True  # also form Θ (all-reduce) and evaluate it in those rounds


@dataclass
class FedEFMConfig:
    """FedEFM's Multishot Foundation Distillation (SPEC §2); symbols from the paper in comments."""

    overseas_steps: int = 10  # steps a visiting copy θ_{i→j} trains on ξ_j (eq. 1)
    distill_steps: int = 10  # steps of eq. 2 at the home silo per round
    temperature: float = 3.0  # T
    beta: float = 0.2  # β: weight of the KD term against CE (eq. 11); measured best of 0–0.9
    sync_every: int = 0  # 0: Θ is formed once, at the end (SPEC §2); k > 0: every k rounds
    #                      each silo also restarts from Θ (FedEFM with periodic aggregation)


@dataclass
class FedProxConfig:
    """FedProx (Li et al., MLSys 2020): local loss CE + μ/2 ‖w − w_global‖²."""

    mu: float = 0.01  # μ, the proximal weight (the paper sweeps 0.001–1)


@dataclass
class MOONConfig:
    """MOON (Li, He & Song, CVPR 2021): CE + μ · model-contrastive loss on representations."""

    mu: float = 1.0  # μ (the paper: 1 for most datasets, 5 for CIFAR-10)
    temperature: float = 0.5  # τ


@dataclass
class FedDFConfig:
    """FedDF (Lin et al., NeurIPS 2020): FedAvg, then the server distils the silos' ensemble
    (average logits) into Θ on an unlabeled public set."""

    distill_steps: int = 10  # server Adam steps per round (0: plain FedAvg)
    lr: float = 1e-3  # the server's Adam learning rate (the paper's)
    temperature: float = 1.0  # T of the softened KL (the paper distils at T = 1)
    public_samples: int = 256  # size of the unlabeled public / proxy set


@dataclass
class FedMDConfig:
    """FedMD (Li & Wang, 2019): silos share only logits on a public set; each digests the
    consensus, then revisits its private data. No weight averaging."""

    digest_steps: int = 10  # steps matching the consensus per round (0: no exchange)
    loss: str = "l1"  # l1 (the paper: mean absolute error on logits) | kl (T² KL of softened outputs)
    temperature: float = 1.0  # T, used by loss: kl
    public_samples: int = 256  # size of the unlabeled public set


@dataclass
class MDHFLConfig:
    """MDH-FL (seed 003): symmetric cross-entropy locally, then KL alignment of softened class
    distributions on a public set; heterogeneous models via ``model.per_silo``."""

    align_steps: int = 10  # alignment steps (public batches) per round (0: no exchange)
    temperature: float = 1.0  # T of the softened distributions
    sce_alpha: float = 0.1  # α of CE in the symmetric loss (Wang et al.'s CIFAR-10 setting)
    sce_beta: float = 1.0  # β of the reverse CE
    public_samples: int = 256  # size of the unlabeled public set


@dataclass
class EMDConfig:
    """The EMD weight w_ij between the local model and a returned expert."""

    backend: str = "exact"  # exact | cvxpylayers | sinkhorn | uniform (ablation: w_ij = 1)
    grid: int = 5  # feature maps pooled to grid×grid nodes
    grad: bool = True  # let the gradient flow through w_ij (the paper)
    normalize: bool = True  # divide by Σ_j w_ij


@dataclass
class NetConfig:
    """Constants of the simulated network clock (SPEC §5); None: derived from the run."""

    model_bits: float | None = None  # default: the trained model's size in bits
    compute_ms: float | None = None  # default: measured local compute time per round
    access_gbps: float = 10.0


def _teacher_model_config():
    from fedsim.models import ModelConfig

    return ModelConfig(name="r50-vit")


@dataclass
class FMInitConfig:
    """Where federated training begins (seed 004, ``init: pretrained | fm``). ``pretrained``: the
    student U-Net (``model``) trained on the proxy set D^P with the segmentation loss; ``fm``: a
    larger teacher U-Net (``teacher``, trained on its own larger public set: our stand-in for
    SAM-Med2D) distilled into the student on D^P with L = α·KL(σ(z_T) ‖ σ(z_S)) per pixel +
    (1 − α)·Dice loss. D^P and the teacher's set come from their own seed streams, disjoint from
    every silo and the test set. Results are cached under ``cache_dir`` keyed by these settings."""

    alpha: float = 0.6  # α of eq. 5 (the paper's)
    temperature: float = 1.0  # T of the per-pixel softmax in the KL term
    proxy_samples: int = 256  # |D^P|
    student_steps: int = 120  # Adam steps on D^P, the same for pretrained and fm
    teacher: Any = field(default_factory=_teacher_model_config)  # the teacher U-Net's encoder
    teacher_samples: int = 1024  # the teacher's own (larger) training set
    teacher_steps: int = 200
    batch_size: int = 16
    lr: float = 2e-3  # Adam, for teacher, pre-training and distillation
    cache_dir: str | None = None  # None: OUTPUT_DIR/_init_cache


def _data_config():
    from fedsim.data import DataConfig

    return DataConfig()


def _downstream_config():
    from fedsim.downstream import DownstreamConfig

    return DownstreamConfig(enabled=False)


def _model_config():
    from fedsim.models import ModelConfig

    return ModelConfig()


@dataclass
class ExperimentConfig:
    """One run: an algorithm on a topology over partitioned data. The embedded default is a
    4-silo ring on synthetic data, small enough for a laptop."""

    name: str = "default"
    algorithm: str = "fedefm"
    scenario: str | None = None  # dfl | cfl | cll | standalone; None: the algorithm's own
    topology: str = "ring-4"  # a YAML/GML path, a shipped name (fedsim/topologies/NAME.yaml) or KIND:N
    rounds: int = 5
    seed: int = 0
    output_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda
    accumulation_status: list[int] | None = None  # ϑ_i per silo (1 = contributes to Θ)
    weight_by_samples: bool = False  # Θ weighted by each silo's sample count as well as ϑ
    timeout_s: float = 300.0  # a silo silent for this long is reported as failed
    compare_with: list[str] = field(default_factory=list)  # baselines run after it on the same data
    task: str = "classification"  # classification (foundation label) | segmentation (U-Net on masks, Dice)
    init: str = "random"  # random | pretrained | fm: the common initial model of every silo (segmentation)
    init_from: str | None = None  # a saved state dict every silo starts from instead (any task)
    data: Any = field(default_factory=_data_config)
    model: Any = field(default_factory=_model_config)
    train: TrainConfig = field(default_factory=TrainConfig)
    fedefm: FedEFMConfig = field(default_factory=FedEFMConfig)
    fedprox: FedProxConfig = field(default_factory=FedProxConfig)
    moon: MOONConfig = field(default_factory=MOONConfig)
    feddf: FedDFConfig = field(default_factory=FedDFConfig)
    fedmd: FedMDConfig = field(default_factory=FedMDConfig)
    mdhfl: MDHFLConfig = field(default_factory=MDHFLConfig)
    emd: EMDConfig = field(default_factory=EMDConfig)
    net: NetConfig = field(default_factory=NetConfig)
    downstream: Any = field(default_factory=_downstream_config)
    fminit: FMInitConfig = field(default_factory=FMInitConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check (and lightly coerce: int → float) a YAML value against a type hint."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is str:
        return isinstance(value, str), value
    if origin is list or hint is list:
        return isinstance(value, list), value
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    return True, value


def _apply(obj: Any, data: dict[str, Any], prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"unknown config key '{path}' (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{path}.")
            continue
        ok, coerced = _type_ok(value, hints.get(key, Any))
        if not ok:
            raise ConfigError(f"config key '{path}' expects {_hint_name(hints.get(key))}, got {value!r}")
        setattr(obj, key, coerced)


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


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
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        try:
            _apply(cfg, data, "")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if "topology" in data:
            cfg.topology = _relative_to(cfg.topology, path.parent)
    for text in overrides or []:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _apply(cfg, nested, "")
    validate_config(cfg)
    return cfg


def _relative_to(topology: str, base: Path) -> str:
    """A topology path in a config file is relative to that file when it exists there."""
    candidate = base / topology
    return str(candidate) if candidate.is_file() else topology


# the algorithms' numeric settings and their ranges
_AT_LEAST_ZERO = ("fedprox.mu", "moon.mu", "feddf.distill_steps", "fedmd.digest_steps", "mdhfl.align_steps",
                  "mdhfl.sce_alpha", "mdhfl.sce_beta")
_ABOVE_ZERO = ("moon.temperature", "feddf.lr", "feddf.temperature", "fedmd.temperature", "mdhfl.temperature",
               "feddf.public_samples", "fedmd.public_samples", "mdhfl.public_samples")


def _get(cfg: ExperimentConfig, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate_config(cfg: ExperimentConfig) -> None:
    if cfg.algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {cfg.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if cfg.scenario is not None and cfg.scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {cfg.scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {cfg.device!r}")
    for key in ("rounds",):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(cfg, key)}")
    for key in ("batch_size", "local_steps"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(cfg.train, key)}")
    for name in cfg.compare_with:
        if name not in ALGORITHMS:
            raise ConfigError(f"compare_with: unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    if cfg.train.optimizer not in ("adam", "sgd"):
        raise ConfigError(f"train.optimizer must be adam or sgd, got {cfg.train.optimizer!r}")
    for section in (cfg.data, cfg.model, cfg.downstream):
        if hasattr(section, "validate"):
            section.validate()
    if cfg.emd.backend not in ("exact", "cvxpylayers", "sinkhorn", "uniform"):
        raise ConfigError(f"unknown emd.backend {cfg.emd.backend!r}; choose exact, cvxpylayers, sinkhorn or uniform")
    if cfg.accumulation_status is not None and any(v not in (0, 1) for v in cfg.accumulation_status):
        raise ConfigError("accumulation_status must be a list of 0/1 values, one per silo")
    if cfg.timeout_s <= 0:
        raise ConfigError(f"timeout_s must be > 0, got {cfg.timeout_s}")
    for key in _AT_LEAST_ZERO:
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {_get(cfg, key)}")
    for key in _ABOVE_ZERO:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {_get(cfg, key)}")
    _validate_init(cfg)
    from fedsim.plugins import check_combinations

    check_combinations(cfg)
    if cfg.fedmd.loss not in ("l1", "kl"):
        raise ConfigError(f"fedmd.loss must be l1 or kl, got {cfg.fedmd.loss!r}")


def _validate_init(cfg: ExperimentConfig) -> None:
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task {cfg.task!r}; choose one of {', '.join(TASKS)}")
    if cfg.init not in INITS:
        raise ConfigError(f"unknown init {cfg.init!r}; choose one of {', '.join(INITS)}")
    if cfg.init != "random" and cfg.task != "segmentation" and cfg.init_from is None:
        raise ConfigError(f"init: {cfg.init} trains a U-Net on the proxy set and needs task: segmentation "
                          f"(or give init_from: PATH)")
    if cfg.init_from is not None and not Path(cfg.init_from).expanduser().is_file():
        raise ConfigError(f"init_from: {cfg.init_from}: file not found")
    f = cfg.fminit
    if not 0.0 <= f.alpha <= 1.0:
        raise ConfigError(f"fminit.alpha must be in [0, 1], got {f.alpha}")
    for key in ("temperature", "lr"):
        if getattr(f, key) <= 0:
            raise ConfigError(f"fminit.{key} must be > 0, got {getattr(f, key)}")
    for key in ("proxy_samples", "student_steps", "teacher_samples", "teacher_steps", "batch_size"):
        if getattr(f, key) < 1:
            raise ConfigError(f"fminit.{key} must be >= 1, got {getattr(f, key)}")
    if hasattr(f.teacher, "validate"):
        f.teacher.validate()
