"""A run resolved once, before any rank starts: config, scenario, topology, training graph,
placement, output folder. Every rank receives the same :class:`RunPlan`; nothing after it asks
which scenario it is in except through :class:`Scenario`."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedsim.aggregation import check_aggregation
from fedsim.algorithms import algorithm_class, algorithm_names
from fedsim.checkpoint import check_round, usable_checkpoint
from fedsim.config import SCENARIOS, ExperimentConfig
from fedsim.config.medmnist import FLAGS as MEDMNIST_FLAGS
from fedsim.config.models import is_monai_name
from fedsim.data import domains_in_use
from fedsim.data.folder import index_rows, silo_folders
from fedsim.data.medmnist import count_centers, open_file
from fedsim.data.partition import silo_mixtures
from fedsim.distributed import Placement
from fedsim.errors import ConfigError, DataError, FedsimError, TopologyError
from fedsim.faults import check_faults, read_failed
from fedsim.fminit import check_initial_state
from fedsim.models import build_model, build_segmenter, features_of
from fedsim.models.plugin import check_model as check_feature_map
from fedsim.privacy import resolve_privacy as privacy_plan
from fedsim.topology import Topology, parse_topology, resolve_topology


@dataclass(frozen=True)
class Scenario:
    """How silos relate in a run — the four questions the rest of the code asks:

    * :attr:`exchanges` — do silos talk at all (DFL, CFL) or not (standalone, CLL)?
    * :attr:`pooled` — is every silo's data pooled on one silo (CLL)?
    * :meth:`training_graph` — which graph do silos train on (CFL: everyone reaches everyone
      through the server; CLL: one silo; otherwise the topology)?
    * :meth:`clock_graph` — which graph does the simulated network clock charge (CFL: the star
      through the server, DFL: the training graph, otherwise none: compute only)?
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ConfigError(f"unknown scenario {self.name!r}; choose one of {', '.join(SCENARIOS)}")

    @property
    def exchanges(self) -> bool:
        return self.name in ("dfl", "cfl")

    @property
    def pooled(self) -> bool:
        return self.name == "cll"

    @property
    def via_server(self) -> bool:
        """Messages are relayed by a data-less server (CFL)."""
        return self.name == "cfl"

    @property
    def decentralized(self) -> bool:
        """Silos exchange along the topology itself, with no server (DFL)."""
        return self.name == "dfl"

    def training_graph(self, underlay: Topology) -> Topology:
        n = underlay.num_silos
        if self.pooled:
            return parse_topology({"name": "cll", "silos": 1, "edges": []}, "cll")
        if self.via_server and n > 1:
            pairs = [[i, j] for i in range(n) for j in range(i + 1, n)]
            return parse_topology(
                {"name": f"{underlay.name}-cfl", "silos": [{"id": s.id, "name": s.name} for s in underlay.silos],
                 "directed": False, "edges": pairs},
                underlay.source,
            )
        if self.decentralized and not underlay.is_strongly_connected():
            raise TopologyError(f"{underlay.source}: the graph is not strongly connected; DFL needs every silo "
                                "to reach every other")
        return underlay

    def clock_graph(self, training: Topology) -> Topology | None:
        if self.via_server:
            server = training.num_silos
            return parse_topology({"name": "cfl-star", "silos": server + 1, "directed": False,
                                   "edges": [[i, server] for i in range(server)]}, "cfl-star")
        if self.decentralized and training.arcs:
            return training
        return None


def scenario_for(cfg: ExperimentConfig) -> str:
    """The scenario to run: the configured one (an error if the algorithm lacks it), else the
    algorithm's own; also checks the task and model against the algorithm."""
    algo = algorithm_class(cfg.algorithm)
    scenario = cfg.scenario or algo.natural_scenario
    allowed = (algo.natural_scenario, *algo.scenarios)
    if scenario not in allowed:
        raise ConfigError(
            f"algorithm {cfg.algorithm!r} does not run in scenario {scenario!r}; use one of {', '.join(dict.fromkeys(allowed))}"
        )
    if cfg.task not in algo.tasks:
        raise ConfigError(
            f"algorithm {cfg.algorithm!r} does not support task {cfg.task!r}; use one of "
            f"{', '.join(n for n in algorithm_names() if cfg.task in algorithm_class(n).tasks)} (or task: classification)"
        )
    if cfg.model.heterogeneous and algo.shares_weights:
        raise ConfigError(
            f"algorithm {cfg.algorithm!r} exchanges or averages weights, which needs one architecture on "
            f"every silo; model.per_silo lists {', '.join(dict.fromkeys(cfg.model.per_silo))}: use an "
            "algorithm that exchanges outputs (fedmd, mdhfl) or one model for all silos"
        )
    return scenario


def forms_foundation(cfg: ExperimentConfig) -> bool:
    """Whether the run ends with a foundation model Θ (the ϑ-weighted average of the silos'
    weights): not across different architectures, nor for algorithms whose silos exchange only
    outputs (their separately trained models share no basin; the score is the silos' mean)."""
    return algorithm_class(cfg.algorithm).shares_weights and not cfg.model.heterogeneous


def check_config_against_topology(cfg: ExperimentConfig, topology: Topology) -> None:
    """Settings that must agree with the silo count (a clear error instead of a crash later)."""
    n = topology.num_silos
    if cfg.accumulation_status is not None and len(cfg.accumulation_status) != n:
        raise ConfigError(
            f"accumulation_status has {len(cfg.accumulation_status)} entries but topology "
            f"{topology.name!r} has {n} silos"
        )
    if cfg.accumulation_status is not None and not any(cfg.accumulation_status):
        raise ConfigError("accumulation_status is 0 for every silo: nothing would form the foundation model")
    domains = getattr(cfg.data, "domains", None)
    if isinstance(domains, list) and not Scenario(cfg.scenario).pooled and len(domains) not in (0, n):
        raise ConfigError(f"data.domains lists {len(domains)} silos but topology {topology.name!r} has {n}")
    check_data_against_topology(cfg, n)


def check_data_against_topology(cfg: ExperimentConfig, n: int) -> None:
    """What the data settings must agree on with the silo count, checked from the config and a
    folder listing (no image is read): the domain mixtures, the silo folders of folder data, a
    held-out test share."""
    data = cfg.data
    if data.domains is not None:
        try:
            mixtures = silo_mixtures(data.domains, data.partition, n)
        except DataError as exc:
            raise ConfigError(str(exc)) from None
        if getattr(data, "label", "route") == "source":
            if len(domains_in_use(mixtures)) < 2:  # one source = one class: nothing to tell apart
                raise ConfigError(f"data.label: source makes each domain a class, and the mixtures of data.domains "
                                  f"for {n} silo(s) hold {len(domains_in_use(mixtures))}; give the silos at least "
                                  "two domains between them")
    if data.kind == "medmnist":
        check_medmnist_file(cfg, n)
    if data.kind != "folder" or not data.root or not Path(data.root).expanduser().is_dir():
        return
    root = Path(data.root).expanduser()

    silo_dirs = silo_folders(root)
    folders = [p.name for p in silo_dirs]
    if data.partition == "domain" and data.domains is None and folders and len(folders) != n:
        raise ConfigError(f"data.root {root} has {len(folders)} silo folders but the run has {n} silos; match them, "
                          "or set data.partition to iid/dirichlet/quantity/attribute to re-split the data")
    if not (root / "test").is_dir() and data.test_fraction == 0:
        raise ConfigError(f"data.test_fraction is 0 and {root}/test does not exist: nothing would be tested; give "
                          "data.test_fraction in (0, 1) (the share held out of each silo) or add a test folder")
    for folder in [*silo_dirs, *(root / extra for extra in ("test", "public") if (root / extra).is_dir())]:
        try:  # each labels.csv against its images, before any rank reads them
            index_rows(folder)
        except DataError as exc:
            raise ConfigError(str(exc)) from None


def check_medmnist_file(cfg: ExperimentConfig, n: int) -> None:
    """MedMNIST's file is there with its official keys and — partition natural — names as many
    centres as the run has silos (read without the images)."""
    try:
        if cfg.data.partition == "natural":
            centres = count_centers(cfg.data)
            if centres != n and not Scenario(cfg.scenario).pooled:
                raise ConfigError(f"data.partition natural: {cfg.data.root} holds images of {centres} centres but "
                                  f"the topology has {n} silos; use a topology with {centres} silos")
        else:
            open_file(cfg.data).close()
    except DataError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class RunPlan:
    """Everything a rank needs to know about a run before it starts."""

    cfg: ExperimentConfig  # cfg.scenario holds the resolved scenario's name (for config.yaml)
    scenario: Scenario
    underlay: Topology  # the topology as configured (data partitioning follows its silo count)
    topology: Topology  # the graph silos train on
    world_size: int
    run_dir: Path
    resume: bool = False
    #: the run's differential privacy, resolved once (``fedsim.privacy.PrivacyPlan``; None: off)
    privacy: Any = None
    #: the checkpointed round to continue from (with ``resume``; checked by usable_checkpoint)
    resume_from: int | None = None
    #: silos lost to crashes (faults.on_crash: exclude) → the round they were lost in
    failed: dict[int, int] = field(default_factory=dict)
    #: which start of the process group this is (0, then 1 after the first restart, …): drills
    attempt: int = 0
    #: result-neutral keys changed on --resume (fedsim.config.RESULT_NEUTRAL): key → [before, now]
    config_changes: dict[str, list] = field(default_factory=dict)

    @property
    def placement(self) -> Placement:
        return Placement(self.topology.num_silos, self.world_size)

    @property
    def forms_foundation(self) -> bool:
        return forms_foundation(self.cfg)

    @property
    def label(self) -> str:
        """How tables and plots name the run, e.g. ``FedEFM (DFL)``."""
        return f"{algorithm_title(self.cfg.algorithm)} ({self.scenario.name.upper()})"


def algorithm_title(name: str) -> str:
    """How tables name an algorithm: its ``title`` (a plug-in without one: its class name)."""
    algo = algorithm_class(name)
    return algo.title or algo.__name__


def baseline_folder(name: str) -> str:
    """The folder name of a ``compare_with`` baseline: the algorithm's name (a plug-in's
    ``module:Class`` as ``module.Class``, a name any file system accepts)."""
    return name.replace(":", ".")


def data_channels(cfg: ExperimentConfig) -> int:
    """The channels of the run's images as the config fixes them (MedMNIST: its flag's)."""
    if cfg.data.channels:
        return int(cfg.data.channels)
    if cfg.data.kind == "medmnist":
        return MEDMNIST_FLAGS[cfg.data.flag].channels
    return 1


def feature_map_side(cfg: ExperimentConfig) -> int:
    """The smaller side of the dense feature map (``features(x)``) of ``cfg.model`` at
    ``data.image_size``: what the EMD's grid pools from."""
    channels, side = data_channels(cfg), cfg.data.known_image_size
    model = build_model(cfg.model.for_silo(0), 2, channels, side)
    with torch.no_grad():
        side = features_of(model.eval(), torch.zeros(2, channels, side, side)).shape[-2:]
    return int(min(side))


_MODEL_PROBLEMS: dict[tuple, str | None] = {}  # a sweep checks the same model many times


def _model_problem(cfg, image_size: int, channels: int, task: str) -> str | None:
    """Why the model cannot be built or run on one image of the run's size, or None."""
    key = (repr(cfg), image_size, channels, task)
    if key not in _MODEL_PROBLEMS:
        _MODEL_PROBLEMS[key] = _try_model(cfg, image_size, channels, task)
    return _MODEL_PROBLEMS[key]


def _try_model(cfg, image_size: int, channels: int, task: str) -> str | None:
    try:
        model = (build_segmenter(cfg, 3, in_channels=channels, image_size=image_size) if task == "segmentation"
                 else build_model(cfg, 2, in_channels=channels, image_size=image_size))
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, channels, image_size, image_size))  # 2: norms need >1 value
    except FedsimError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's own message says what does not fit
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    want = (2, 3, image_size, image_size) if task == "segmentation" else (2, 2)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        what = "a segmentation network (per-pixel logits)" if task == "segmentation" else "a classifier (logits)"
        return f"it gives {got} for a batch of 2, not {want}: task: {task} needs {what}"
    return None


def check_model(cfg: ExperimentConfig) -> None:
    """Every architecture of the run is built and run on a batch of two images of
    ``data.image_size`` before any rank starts: widths, GroupNorm groups, transformer sizes and
    image sizes that do not fit are one line naming the keys instead of a traceback in round 0."""
    channels, side = data_channels(cfg), cfg.data.known_image_size
    for i in range(max(1, len(cfg.model.per_silo))):
        model = cfg.model.for_silo(i)
        problem = _model_problem(model, side, channels, cfg.task)
        if problem and is_monai_name(model.name):
            raise ConfigError(f"model {model.name!r} (model.args {model.args}) cannot run on the run's {side}×{side} "
                              f"images: {problem}")
        if problem:
            raise ConfigError(
                f"model {model.name!r} (width {model.width}, norm {model.norm}, norm_groups {model.norm_groups}) "
                f"cannot run on data.image_size {side} images: {problem}")


def check_cross_keys(cfg: ExperimentConfig) -> None:
    """Constraints between keys that only the built model can tell (for a plug-in model, or data
    whose image size is its own, the first rank checks the same before round 0): the model runs
    on the run's images, and its feature map — which a MONAI network may lack — reaches the grid
    the algorithm pools it to (:meth:`fedsim.algorithms.base.Algorithm.feature_grid`)."""
    sized = cfg.data.known_image_size is not None and not cfg.model.plugin
    if sized:
        check_model(cfg)
    algorithm = algorithm_class(cfg.algorithm)
    if sized and cfg.model.monai and cfg.task == "classification" and algorithm.needs_features:
        channels, side = data_channels(cfg), cfg.data.known_image_size
        for i in range(max(1, len(cfg.model.per_silo))):
            model = cfg.model.for_silo(i)
            check_feature_map(build_model(model, 2, channels, side), torch.zeros(2, channels, side, side), 2,
                              cfg.algorithm, model.name, algorithm.feature_grid(cfg))
    grid = algorithm.feature_grid(cfg) if cfg.task == "classification" else None
    if sized and grid is not None:
        side = feature_map_side(cfg)
        if grid > side:
            raise ConfigError(
                f"emd.grid {grid} is larger than the {side}×{side} feature map of model "
                f"{cfg.model.name!r} at data.image_size {cfg.data.known_image_size}; use emd.grid <= {side} "
                f"(the largest this map allows) or larger images")


def check_compression(cfg: ExperimentConfig) -> None:
    """Compression codes model messages: an algorithm that exchanges only outputs has none."""
    if cfg.compression.active and not algorithm_class(cfg.algorithm).shares_weights:
        raise ConfigError(f"compression.kind {cfg.compression.kind} codes model messages, and algorithm "
                          f"{cfg.algorithm!r} exchanges only outputs on the public set; use compression.kind: none")
    section = getattr(cfg, cfg.algorithm, None)
    if cfg.compression.active and getattr(section, "expert_optimizer", None) == "travels":
        raise ConfigError(f"{cfg.algorithm}.expert_optimizer: travels sends each model with its optimiser state, "
                          f"which compression.kind {cfg.compression.kind} cannot code; use compression.kind: none "
                          f"or {cfg.algorithm}.expert_optimizer: fresh")


def _graphs(cfg: ExperimentConfig, failed: dict[int, int] | None = None) -> tuple[ExperimentConfig, Topology, Topology]:
    """``cfg`` with its scenario resolved, its underlay and training graph, checked (no privacy)."""
    cfg.scenario = scenario_for(cfg)
    algorithm_class(cfg.algorithm).check(cfg)  # settings the algorithm is not defined for
    underlay = resolve_topology(cfg.topology)
    check_config_against_topology(cfg, underlay)
    check_cross_keys(cfg)
    check_compression(cfg)
    scenario = Scenario(cfg.scenario)
    training = scenario.training_graph(underlay)
    check_faults(cfg, training, forms_foundation(cfg), scenario.pooled, failed,
                 sends_weights=algorithm_class(cfg.algorithm).shares_weights and scenario.exchanges)
    check_aggregation(cfg, scenario, training, algorithm_class(cfg.algorithm), forms_foundation(cfg))
    return cfg, underlay, training


def resolve_privacy(cfg: ExperimentConfig, underlay: Topology, training: Topology):
    """The run's privacy plan (σ, sampling rates, planned steps; None without privacy), with
    every privacy check."""
    return privacy_plan(cfg, Scenario(cfg.scenario), training, underlay, algorithm_class(cfg.algorithm))


def resolve(cfg: ExperimentConfig, failed: dict[int, int] | None = None) -> tuple[ExperimentConfig, Topology, Topology]:
    """``cfg`` with its scenario resolved, its underlay and its training graph — every check that
    can run before a rank starts, the privacy checks too (``failed``: silos already lost to crashes)."""
    cfg, underlay, training = _graphs(cfg, failed)
    resolve_privacy(cfg, underlay, training)
    return cfg, underlay, training


def build_plan(cfg: ExperimentConfig, run_dir: str | Path, world_size: int, resume: bool = False,
               attempt: int = 0) -> RunPlan:
    """The plan of one run on ``world_size`` ranks (an error when there are more ranks than silos).
    With ``resume`` it continues from the newest undamaged checkpoint of ``run_dir`` (a damaged
    one is named in a warning line; one whose files hold anything but data is an error) and keeps
    the silos an earlier attempt lost to crashes. Files the initial state is read from are checked
    the same way."""
    failed = read_failed(run_dir) if resume else {}
    cfg, underlay, topology = _graphs(cfg, failed)
    if topology.num_silos < world_size:
        raise ConfigError(f"{world_size} ranks but only {topology.num_silos} silo(s) to place; "
                          f"launch with at most {topology.num_silos} processes")
    plan = RunPlan(cfg, Scenario(cfg.scenario), underlay, topology, world_size, Path(run_dir), resume,
                   privacy=resolve_privacy(cfg, underlay, topology), failed=failed, attempt=attempt)

    check_initial_state(cfg)  # init_from / a cached initial state: data only, checked before any rank
    if resume:
        plan.resume_from, warnings = usable_checkpoint(run_dir)
        for line in warnings:
            print(f"fedsim: warning: {line}", file=sys.stderr, flush=True)
        if plan.resume_from is not None:  # a file holding code is refused here, not passed over
            check_round(run_dir, plan.resume_from)
    return plan


def baseline_config(cfg: ExperimentConfig, algorithm: str) -> ExperimentConfig:
    """The same experiment with another algorithm (its own natural scenario), for comparison."""
    other = copy.deepcopy(cfg)
    other.algorithm, other.scenario, other.compare_with = algorithm, None, []
    other.name = f"{cfg.name}/{baseline_folder(algorithm)}"
    other.scenario = scenario_for(other)
    return other


def experiment_plans(cfg: ExperimentConfig, run_dir: Path, world_size: int, resume: bool = False,
                     attempt: int = 0) -> list[RunPlan]:
    """The main run, then each ``compare_with`` baseline (in its algorithm's own scenario) in
    run_dir/baselines/<algorithm>, all on the same ranks."""
    plans = [build_plan(cfg, run_dir, world_size, resume, attempt)]
    for algorithm in cfg.compare_with:
        plans.append(build_plan(baseline_config(cfg, algorithm), Path(run_dir) / "baselines" / baseline_folder(algorithm),
                                world_size, resume, attempt))
    return plans


