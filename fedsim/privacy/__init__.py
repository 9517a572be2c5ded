"""Differential privacy of a run (``privacy:``): what it leaks, bounded and accounted.

* ``mode: sample`` — **DP-SGD per silo** with Opacus (:mod:`fedsim.privacy.dpsgd`). Every
  gradient step that reads a silo's training data — its own local steps, the visiting models it
  trains (FedEFM's overseas steps, the released rule's copies) and its distillation steps — clips
  each sample's gradient to ``max_grad_norm`` (C) and adds Gaussian noise of std σ·C; the silo's
  Opacus RDP accountant composes every one of those steps, so ε_i bounds what anything that leaves
  silo i reveals about one of its samples (δ = ``delta``).
* ``mode: client`` — **client-level DP** in the DP-FedAvg style (:mod:`fedsim.privacy.client`):
  each silo's round update is clipped to norm ``max_grad_norm`` (S), the server adds Gaussian
  noise of std σ·S to the sum of the participating silos' updates and divides by their number;
  an Opacus RDP accountant (sampling rate 1: every participating silo every round) gives ε for
  one whole silo's data.

σ is ``noise_multiplier``, or Opacus finds it from ``target_epsilon`` (``get_noise_multiplier``)
for the silo that spends the most — once, in the plan, before any rank starts. Everything a user
can get wrong (an algorithm or model that cannot be private, δ ≥ 1/n, a target that cannot be
reached) is one line and exit 2 there. This module imports neither torch nor Opacus: the config
reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from fedsim.errors import ConfigError
from fedsim.settings import Range

PRIVACY_MODES = ("none", "sample", "client")
#: the built-in models Opacus cannot give per-sample gradients (checked on the model itself)
OPACUS_INCOMPATIBLE = "shufflenet (always BatchNorm), r50-vit (nn.MultiheadAttention), any model with model.norm: batch"


@dataclass
class PrivacyConfig:
    """The ``privacy:`` section: DP-SGD per silo or DP-FedAvg (the module docstring)."""

    mode: Literal[PRIVACY_MODES] = "none"  # none | sample (DP-SGD per silo) | client (DP-FedAvg)
    noise_multiplier: Annotated[float, Range(ge=0)] | None = None  # σ, the Gaussian noise multiplier; or give target_epsilon
    max_grad_norm: Annotated[float, Range(gt=0)] = 1.0  # sample: per-sample gradient bound C; client: update bound S
    delta: Annotated[float, Range(gt=0, lt=1)] = 1e-5  # δ of (ε, δ)-DP; must be below 1/n
    target_epsilon: Annotated[float, Range(gt=0)] | None = None  # ε to reach after the last round (sets σ)
    #: sample mode: ``poisson`` — each sample joins a step's batch with probability q = B/n, the
    #: sampling the RDP accountant's guarantee is for; ``shuffle`` — the fixed-size shuffled
    #: batches of a non-private run, accounted at q = B/n as Opacus does without Poisson sampling
    #: (the common approximation; it lets a private run use exactly a non-private run's batches)
    sampling: Literal["poisson", "shuffle"] = "poisson"

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def validate(self) -> None:
        if not self.active:
            return
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(f"privacy.mode {self.mode} needs exactly one of privacy.noise_multiplier (σ) and "
                              "privacy.target_epsilon (σ found by Opacus)")


@dataclass
class PrivacyPlan:
    """The privacy of one run, resolved in the plan and identical on every rank."""

    mode: str
    noise_multiplier: float  # σ, given or found from target_epsilon
    max_grad_norm: float
    delta: float
    target_epsilon: float | None
    sampling: str
    #: per silo (of the training graph): the accountant's sampling rate q_i (sample: B/n_i;
    #: client: 1 for a participating silo, 0 for one with ϑ_i = 0)
    sample_rates: dict[int, float] = field(default_factory=dict)
    #: per silo: accountant steps planned over the run (an upper bound on idle multigraph arcs)
    planned_steps: dict[int, int] = field(default_factory=dict)
    #: sample: per silo, the expected batch size q_i·n_i that DP-SGD's noisy sum is divided by
    batch_sizes: dict[int, int] = field(default_factory=dict)
    participants: int = 0  # client: the silos whose clipped updates the server sums (Σ ϑ_i)

    def describe(self) -> dict[str, Any]:
        """What ``summary.json`` says under ``privacy``."""
        return {"mode": self.mode, "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
                "delta": self.delta, "target_epsilon": self.target_epsilon,
                "sampling": self.sampling if self.mode == "sample" else None, "accountant": "rdp (opacus)"}


def resolve_privacy(cfg, scenario, training, underlay) -> PrivacyPlan | None:
    """The run's :class:`PrivacyPlan` (None without privacy), every check done here: the
    algorithm, scenario, task and model can be private, δ < 1/n, a target ε can be reached."""
    from fedsim.algorithms import algorithm_class

    p = cfg.privacy
    if not p.active:
        return None
    algo = algorithm_class(cfg.algorithm)
    if p.mode not in algo.privacy_modes:
        note = f": {algo.privacy_note}" if getattr(algo, "privacy_note", "") else ""
        can = [m for m in algo.privacy_modes if m != "none"]
        raise ConfigError(f"privacy.mode {p.mode} is not available for algorithm {cfg.algorithm!r}{note}"
                          + (f" (it supports privacy.mode {' | '.join(can)})" if can else ""))
    plan = PrivacyPlan(p.mode, p.noise_multiplier if p.noise_multiplier is not None else 0.0, p.max_grad_norm,
                       p.delta, p.target_epsilon, p.sampling)
    if p.mode == "sample":
        return _resolve_sample(cfg, plan, algo, scenario, training, underlay)
    return _resolve_client(cfg, plan, scenario, training)


def _resolve_sample(cfg, plan: PrivacyPlan, algo, scenario, training, underlay) -> PrivacyPlan:
    if cfg.task != "classification":
        raise ConfigError("privacy.mode sample needs task: classification (the segmentation loss's soft Dice is "
                          "taken over the whole batch, so it has no per-sample gradient)")
    check_opacus_model(cfg)
    sizes = silo_sizes(cfg, underlay.num_silos, scenario.pooled)
    biggest = max(range(len(sizes)), key=lambda i: sizes[i])
    if plan.delta >= 1.0 / sizes[biggest]:
        raise ConfigError(f"privacy.delta {plan.delta:g} is not below 1/n for silo {biggest}'s {sizes[biggest]} "
                          f"training samples; choose privacy.delta < {1.0 / sizes[biggest]:.2g} (δ is the chance "
                          "the guarantee fails, it must be far below one sample's share)")
    b = cfg.train.batch_size
    plan.batch_sizes = {i: min(b, n) for i, n in enumerate(sizes)}
    plan.sample_rates = {i: min(b, n) / n for i, n in enumerate(sizes)}
    plan.planned_steps = {i: sum(algo.private_steps(cfg, scenario, training, i, k) for k in range(cfg.rounds))
                          for i in range(len(sizes))}
    if plan.target_epsilon is not None:
        needed = {}
        for i in range(len(sizes)):
            key = (plan.sample_rates[i], plan.planned_steps[i])
            if key not in needed:
                needed[key] = _noise_for(plan, *key, who=f"silo {i}'s {key[1]} DP-SGD steps at sampling rate "
                                                          f"{key[0]:.3g}", cfg=cfg)
        plan.noise_multiplier = max(needed.values())
    return plan


def _resolve_client(cfg, plan: PrivacyPlan, scenario, training) -> PrivacyPlan:
    if not scenario.via_server:
        raise ConfigError(f"privacy.mode client protects what the server averages (DP-FedAvg); scenario "
                          f"{scenario.name} has no server: use scenario: cfl, or privacy.mode sample")
    if cfg.weight_by_samples:
        raise ConfigError("privacy.mode client bounds each silo's share of the average by a uniform weight; "
                          "set weight_by_samples: false")
    n = training.num_silos
    status = cfg.accumulation_status or [1] * n
    plan.participants = sum(status)
    if plan.delta >= 1.0 / plan.participants:
        raise ConfigError(f"privacy.delta {plan.delta:g} is not below 1/{plan.participants} (client-level DP: the "
                          f"unit is a silo and {plan.participants} take part); choose privacy.delta < "
                          f"{1.0 / plan.participants:.2g}")
    plan.sample_rates = {i: float(status[i]) for i in range(n)}
    plan.planned_steps = {i: cfg.rounds * status[i] for i in range(n)}
    if plan.target_epsilon is not None:
        plan.noise_multiplier = _noise_for(plan, 1.0, cfg.rounds, who=f"{cfg.rounds} noisy averages of every "
                                           "participating silo's update", cfg=cfg)
    return plan


def _noise_for(plan: PrivacyPlan, sample_rate: float, steps: int, who: str, cfg) -> float:
    """σ that Opacus finds for ``target_epsilon`` over ``steps`` steps at ``sample_rate``."""
    import warnings

    from opacus.accountants.utils import get_noise_multiplier

    if steps == 0:
        return 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimal order is the largest alpha": a tight target, still valid
            return float(get_noise_multiplier(target_epsilon=plan.target_epsilon, target_delta=plan.delta,
                                              sample_rate=sample_rate, steps=steps, accountant="rdp"))
    except ValueError:
        raise ConfigError(f"privacy.target_epsilon {plan.target_epsilon:g} cannot be reached in {cfg.rounds} "
                          f"rounds: {who} stay above it at any noise (Opacus stops at σ = 1e6); raise "
                          "privacy.target_epsilon or privacy.delta, or use fewer rounds or steps") from None


_SIZES: dict[tuple, list[int]] = {}


def silo_sizes(cfg, num_silos: int, pooled: bool) -> list[int]:
    """Training samples per silo (after the validation split), built by the loader the ranks use;
    one pooled silo in CLL. Cached per data setting (a sweep plans many seeds of one config)."""
    import yaml

    from fedsim.data import carve_validation, load_federated

    key = (yaml.safe_dump(cfg.data.__dict__, sort_keys=True), num_silos, cfg.seed)
    if key not in _SIZES:
        data = load_federated(cfg.data, num_silos, cfg.seed)
        train, _ = carve_validation(data.train, cfg.data.validation_fraction, cfg.seed)
        _SIZES[key] = [len(ds) for ds in train]
    sizes = _SIZES[key]
    return [sum(sizes)] if pooled else list(sizes)


def check_opacus_model(cfg) -> None:
    """One line when Opacus cannot compute per-sample gradients of a silo's model."""
    import warnings

    from opacus.validators import ModuleValidator

    from fedsim.data import NUM_CLASSES
    from fedsim.models import build_model

    # the layers decide, not the head's or the stem's size; a plug-in model is built as the ranks
    # will build it as far as the config tells (its channels and class names)
    channels = int(getattr(cfg.data, "channels", None) or 1)
    classes = getattr(cfg.data, "classes", None)
    num_classes = len(classes) if isinstance(classes, list) else NUM_CLASSES
    for name in dict.fromkeys(cfg.model.per_silo or [cfg.model.name]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(replace(cfg.model, name=name, per_silo=[]), num_classes, channels)
            errors = ModuleValidator.validate(model, strict=False)
        if errors:
            reason = str(errors[0]).split(".")[0].strip()
            raise ConfigError(f"privacy.mode sample: Opacus cannot compute per-sample gradients of model {name!r} "
                              f"({reason}); not compatible: {OPACUS_INCOMPATIBLE}; use cnn, resnet10/12/18/50 or "
                              "mobilenetv2 with model.norm: group")


def build_privacy(plan, fed):
    """The privacy component of a rank: :class:`NoPrivacy`, DP-SGD or DP-FedAvg."""
    priv = getattr(plan, "privacy", None)
    if priv is None:
        return NoPrivacy()
    if priv.mode == "sample":
        from fedsim.privacy.dpsgd import SampleDP

        return SampleDP(priv, fed)
    from fedsim.privacy.client import ClientDP

    return ClientDP(priv, fed)


class NoPrivacy:
    """What the federation asks of its privacy component, when the run is not private."""

    mode = "none"
    #: whether every loss must be a mean of per-sample terms (DP-SGD): FedEFM then weights its
    #: teachers per sample instead of per batch
    per_sample = False

    def batch_stream(self, silo: int, dataset, batch_size: int, seed: int, device, target: str):
        from fedsim.federation import BatchStream

        return BatchStream(dataset, batch_size, seed, device, target)

    def session(self, model, optimizer, owner: int):
        """A context giving the optimizer to step ``model`` with on silo ``owner``'s data."""
        from contextlib import nullcontext

        return nullcontext(optimizer)

    def record(self, silo: int) -> dict[str, Any]:
        """What this round's metrics record of ``silo`` adds (``epsilon``, …)."""
        return {}

    def silo_state(self, silo: int) -> dict[str, Any]:
        return {}

    def load_silo_state(self, silo: int, state: dict[str, Any]) -> None:
        pass


__all__ = ["PRIVACY_MODES", "NoPrivacy", "PrivacyConfig", "PrivacyPlan", "build_privacy", "resolve_privacy"]
