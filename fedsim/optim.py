"""The silos' optimisers: Adam, AdamW or SGD (``train.optimizer``) with the learning-rate schedule
of ``train.lr_schedule``, and the optimiser state a model carries when it travels to another
silo (``fedefm.expert_optimizer: travels``, ``fedefm_released.expert_optimizer: travels``).

``sqrt`` is the FedEFM authors' released schedule (aioz-ai/FedEFM ``utils/optim.py``,
``get_lr_scheduler(..., "sqrt")``): ``LambdaLR(optimizer, lambda x: 1/np.sqrt(x) if x > 0 else 1)``
stepped once after every optimiser step (``fit_batch``: ``optimizer.step(); lr_scheduler.step()``),
so the n-th step (counting from 0) runs at α·1/√n, α for n = 0 and 1. It is per optimiser step,
not per round: a silo that takes more steps per round decays faster. Here the count lives in the
optimiser's own parameter group (``schedule_steps``, beside ``initial_lr`` as LambdaLR keeps it),
advanced by a step hook, so every step of fedsim — local training, overseas visits, distillation,
DP-SGD — advances it, and the optimiser's ``state_dict`` (the checkpoint) carries it.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from fedsim.config import ExperimentConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "sqrt")


def sqrt_factor(step: int) -> float:
    """The released ``sqrt`` schedule's factor after ``step`` optimiser steps: 1/√step, 1 at 0."""
    return 1 / math.sqrt(step) if step > 0 else 1


def _advance_sqrt(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    # LambdaLR.step(): last_epoch += 1; lr = base_lr * lambda(last_epoch), the same product
    for group in optimizer.param_groups:
        group["schedule_steps"] += 1
        group["lr"] = group["initial_lr"] * sqrt_factor(group["schedule_steps"])


def _eager(method: Any) -> Any:
    """``method`` without the wrappers torch puts around it (``functools.wraps`` chains)."""
    return inspect.unwrap(method)


class _Eager:
    """torch's optimiser, without importing TorchDynamo.

    ``torch.optim.Optimizer`` wraps ``add_param_group`` (called by every constructor),
    ``zero_grad``, ``state_dict``, ``load_state_dict`` and every ``step`` in decorators that
    import ``torch._dynamo`` on their first call (~1 s and ~160 MB per process, more than a
    small job's training) only to mark them "not to be traced" by ``torch.compile``, which fedsim
    never uses. These are the same methods unwrapped: the same arithmetic, hooks (``register_step_post_hook``)
    and state dicts; ``step`` sets the grad mode as the wrapper does. Under a user's
    ``torch.compile`` they would be traced rather than skipped.
    """

    add_param_group = _eager(torch.optim.Optimizer.add_param_group)
    zero_grad = _eager(torch.optim.Optimizer.zero_grad)
    state_dict = _eager(torch.optim.Optimizer.state_dict)
    load_state_dict = _eager(torch.optim.Optimizer.load_state_dict)

    def step(self, closure=None):  # noqa: D102
        step = _eager(super().step.__func__)  # the optimiser's own step (after this class in the MRO)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return step(self, closure)


class Adam(_Eager, torch.optim.Adam):
    """``torch.optim.Adam`` without TorchDynamo (:class:`_Eager`)."""


class AdamW(_Eager, torch.optim.AdamW):
    """``torch.optim.AdamW`` without TorchDynamo (:class:`_Eager`)."""


class SGD(_Eager, torch.optim.SGD):
    """``torch.optim.SGD`` without TorchDynamo (:class:`_Eager`)."""


def make_optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """Silo ``model``'s optimiser as ``cfg.train`` says, with its learning-rate schedule.

    ``adamw`` is torch's AdamW with its defaults (betas 0.9/0.999, eps 1e-8) as the released code
    builds it (``optim.AdamW(params, lr=lr)``, whose weight decay is torch's default 0.01: set
    ``train.weight_decay: 0.01`` to match it; fedsim's default is 0 for every optimiser)."""
    t = cfg.train
    if t.optimizer == "adam":
        opt = Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    elif t.optimizer == "adamw":
        opt = AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    else:
        opt = SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.lr_schedule == "sqrt":
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
            group["schedule_steps"] = 0
        opt.register_step_post_hook(_advance_sqrt)
    return opt


def _state_keys(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    """The per-parameter state a step of ``optimizer`` reads, in a fixed order."""
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        keys = ("step", "exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if optimizer.defaults.get("amsgrad") else keys
    if isinstance(optimizer, torch.optim.SGD):
        return ("momentum_buffer",) if optimizer.defaults.get("momentum") else ()
    raise TypeError(f"fedsim cannot send the state of a {type(optimizer).__name__} optimiser")


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def travelling_template(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Tensors shaped like :func:`travelling_state` of an optimiser built as ``optimizer`` (what a
    receiver posts for the message)."""
    out = []
    for p in _params(optimizer):
        for key in _state_keys(optimizer):
            out.append(torch.zeros((), dtype=torch.float32, device=p.device) if key == "step" else torch.zeros_like(p))
    if "schedule_steps" in optimizer.param_groups[0]:
        out.append(torch.zeros(len(optimizer.param_groups), dtype=torch.int64, device=_params(optimizer)[0].device))
    return out


def travelling_state(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Everything the next step of ``optimizer`` depends on besides the weights, as tensors:
    per parameter Adam's step count and moments (SGD's momentum buffer), then the schedule's
    step count per parameter group. What a deep copy of a model with its optimiser and scheduler
    would carry (the released code's ``copy.deepcopy(self.workers_models[neighbor])``). Before
    the first step, zeros: loading them gives the same first step as a fresh optimiser. The
    optimiser's own tensors, not copies (a message is read before its sender steps again)."""
    keys = _state_keys(optimizer)
    out: list[torch.Tensor] = []
    for p in _params(optimizer):
        state = optimizer.state.get(p) or {}
        for key in keys:
            value = state.get(key)
            if value is None:
                value = torch.zeros((), dtype=torch.float32, device=p.device) if key == "step" else torch.zeros_like(p)
            elif key == "step" and (not torch.is_tensor(value) or value.dtype != torch.float32 or value.dim()):
                value = torch.as_tensor(value, dtype=torch.float32).reshape(())  # a count: exact to 2^24 steps
            out.append(value)
    if "schedule_steps" in optimizer.param_groups[0]:
        out.append(torch.tensor([g["schedule_steps"] for g in optimizer.param_groups], dtype=torch.int64,
                                device=_params(optimizer)[0].device))
    return out


def load_travelling_state(optimizer: torch.optim.Optimizer, tensors: list[torch.Tensor]) -> None:
    """Give ``optimizer`` (built by :func:`make_optimizer` for the receiving copy, new or reused
    from an earlier visit) the state of :func:`travelling_state`. Every tensor is copied: a
    message between co-located silos is the sender's own storage, which the copy's steps must not
    touch; into the tensors the optimiser already holds when it has them (no allocation)."""
    keys = _state_keys(optimizer)
    it = iter(tensors)
    scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32  # as torch's Adam
    for p in _params(optimizer):
        if not keys:
            break
        state = optimizer.state.get(p)
        if state is None:
            state = optimizer.state[p] = {}
        for key in keys:
            value = next(it)
            held = state.get(key)
            if held is not None and held.shape == value.shape:
                held.copy_(value)
            else:
                state[key] = value.to("cpu", scalar, copy=True) if key == "step" else value.to(p.device, copy=True)
    if "schedule_steps" in optimizer.param_groups[0]:
        counts = next(it).tolist()
        for group, n in zip(optimizer.param_groups, counts, strict=True):
            group["schedule_steps"] = int(n)
            group["lr"] = group["initial_lr"] * sqrt_factor(int(n))
    if next(it, None) is not None:
        raise ValueError("the optimiser state received has more tensors than this optimiser keeps")


def reset_optimizer(optimizer: torch.optim.Optimizer, cfg: ExperimentConfig) -> None:
    """``optimizer`` as :func:`make_optimizer` builds it: no state, the first learning rate and
    schedule step (a visiting copy's optimiser is reused from visit to visit: the same steps as a
    new one, without building one per visit)."""
    optimizer.state.clear()
    for group in optimizer.param_groups:
        group["lr"] = cfg.train.lr
        if "schedule_steps" in group:
            group["schedule_steps"] = 0


def travelling_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes :func:`travelling_state` adds to a message."""
    return sum(t.numel() * t.element_size() for t in travelling_template(optimizer))


def travelling_factor(model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """How many times a model's bytes a message is when the optimiser's state travels with it
    (what the simulated clock scales the message size by)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 1.0 + travelling_bytes(optimizer) / weights
