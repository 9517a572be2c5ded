"""A run's differential privacy resolved in the plan, once, before any rank starts
(:class:`PrivacyPlan`): σ given or found by Opacus for ``target_epsilon``, the sampling rates and
the planned steps of every silo, and every check a user's settings can fail (the algorithm,
scenario, task and model, δ < 1/n, a reachable target). Opacus is imported only when a run is
private."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from fedsim.config.data import NUM_CLASSES
from fedsim.config.privacy import OPACUS_INCOMPATIBLE
from fedsim.data import carve_validation, load_federated
from fedsim.errors import ConfigError
from fedsim.models import build_model


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


def resolve_privacy(cfg, scenario, training, underlay, algo) -> PrivacyPlan | None:
    """The run's :class:`PrivacyPlan` (None without privacy), every check done here: the
    algorithm (``algo``, its class: the modes it supports, the steps that read a silo's data),
    scenario, task and model can be private, δ < 1/n, a target ε can be reached."""
    p = cfg.privacy
    if not p.active:
        return None
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
    key = (yaml.safe_dump(cfg.data.__dict__, sort_keys=True), num_silos, cfg.seed)
    if key not in _SIZES:
        data = load_federated(cfg.data, num_silos, cfg.seed)
        train, _ = carve_validation(data.train, cfg.data.validation_fraction, cfg.seed)
        _SIZES[key] = [len(ds) for ds in train]
    sizes = _SIZES[key]
    return [sum(sizes)] if pooled else list(sizes)


def check_opacus_model(cfg) -> None:
    """One line when Opacus cannot compute per-sample gradients of a silo's model."""
    from opacus.validators import ModuleValidator

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
