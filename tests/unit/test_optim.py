"""The silos' optimisers against the FedEFM authors' released code, written as it is there
(aioz-ai/FedEFM ``utils/optim.py``: ``optim.AdamW(params, lr=lr)`` and
``LambdaLR(optimizer, lr_lambda=lambda x: 1/np.sqrt(x) if x > 0 else 1)`` stepped after every
optimiser step), and the optimiser state a travelling model carries against ``copy.deepcopy``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedsim.config import load_config
from fedsim.optim import load_travelling_state, make_optimizer, travelling_bytes, travelling_state
from tests.harness import LR, Released


def _cfg(*sets: str):
    return load_config(None, ["train.optimizer=adamw", "train.lr_schedule=sqrt", "train.weight_decay=0.01",
                              f"train.lr={LR}", *sets])


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))


def _batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 5, generator=g), torch.randint(0, 3, (1,), generator=g)) for _ in range(n)]


def _fit(model, optimizer, batches) -> list[float]:
    lrs = []
    for x, y in batches:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return lrs


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_adamw_with_sqrt_decay_is_the_released_optimizer_and_schedule_bit_for_bit():
    ref = Released(_model())
    ours = _model()
    opt = make_optimizer(ours, _cfg())
    batches = _batches(9)
    lrs = _fit(ours, opt, batches)
    want = []
    for x, y in batches:
        want.append(ref.optimizer.param_groups[0]["lr"])
        ref.fit_batch(x, y)
    assert lrs == want  # per optimiser step: α, α, α/√2, α/√3, …
    assert lrs[:4] == [LR, LR, LR * (1 / np.sqrt(2)), LR * (1 / np.sqrt(3))]
    assert _same(ours, ref.net)
    assert opt.defaults["weight_decay"] == ref.optimizer.defaults["weight_decay"] == 0.01  # torch's AdamW default
    assert opt.defaults["betas"] == ref.optimizer.defaults["betas"] and opt.defaults["eps"] == ref.optimizer.defaults["eps"]


def test_constant_schedule_keeps_the_learning_rate_and_adds_nothing_to_the_state():
    model = _model()
    opt = make_optimizer(model, _cfg("train.lr_schedule=constant"))
    assert set(_fit(model, opt, _batches(4))) == {LR}
    assert "schedule_steps" not in opt.state_dict()["param_groups"][0]


def test_a_checkpointed_schedule_resumes_bit_identically():
    """The step count is in the optimiser's state dict, which the checkpoint saves."""
    batches = _batches(8)
    whole = _model()
    _fit(whole, make_optimizer(whole, _cfg()), batches)
    first = _model()
    opt = make_optimizer(first, _cfg())
    _fit(first, opt, batches[:3])
    saved = copy.deepcopy((first.state_dict(), opt.state_dict()))
    again = _model(seed=5)  # another start: everything comes from the saved state
    again.load_state_dict(saved[0])
    opt2 = make_optimizer(again, _cfg())
    opt2.load_state_dict(saved[1])
    lrs = _fit(again, opt2, batches[3:])
    assert lrs[0] == LR * (1 / np.sqrt(3)) and _same(again, whole)


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_a_travelling_state_continues_as_a_deep_copy_of_model_and_optimiser(optimizer):
    """What travels (tensors, as on the wire) gives the copy the next steps a deep copy of the
    released model object takes; the sender's own state is not touched by the copy's steps."""
    cfg = _cfg(f"train.optimizer={optimizer}")
    home = _model()
    opt = make_optimizer(home, cfg)
    _fit(home, opt, _batches(3))
    ref = Released(_model(), optimizer)
    for x, y in _batches(3):
        ref.fit_batch(x, y)
    twin = copy.deepcopy(ref)  # "dummy_model = copy.deepcopy(self.workers_models[neighbor])"
    for x, y in _batches(2, seed=7):
        twin.fit_batch(x, y)
    sender = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    message = travelling_state(opt)  # not copied: as a co-located hand-off delivers it
    visitor = _model(seed=9)
    visitor.load_state_dict(home.state_dict())
    vopt = make_optimizer(visitor, cfg)
    load_travelling_state(vopt, message)
    _fit(visitor, vopt, _batches(2, seed=7))
    assert _same(home, ref.net) and _same(visitor, twin.net)
    assert all(torch.equal(v, opt.state_dict()["state"][0][k]) for k, v in sender.items())
    assert travelling_bytes(opt) == sum(t.numel() * t.element_size() for t in message)


def test_the_state_of_an_optimiser_that_never_stepped_travels_as_a_fresh_one():
    cfg = _cfg()
    a, b = _model(), _model()
    fresh = make_optimizer(a, cfg)
    loaded = make_optimizer(b, cfg)
    load_travelling_state(loaded, travelling_state(make_optimizer(_model(), cfg)))
    _fit(a, fresh, _batches(3))
    _fit(b, loaded, _batches(3))
    assert _same(a, b)


def test_a_reused_optimiser_reset_or_loaded_steps_as_a_new_one():
    """A visiting copy's optimiser is reused from visit to visit: reset, it steps as a new one;
    loaded with a travelling state, as a new one loaded with it."""
    from fedsim.optim import reset_optimizer

    cfg = _cfg()
    home = _model()
    home_opt = make_optimizer(home, cfg)
    _fit(home, home_opt, _batches(3))
    reused_net = _model(seed=3)
    reused = make_optimizer(reused_net, cfg)
    _fit(reused_net, reused, _batches(4, seed=4))  # an earlier visit left state and a decayed rate
    for load in (False, True):
        new_net = _model(seed=3)
        new = make_optimizer(new_net, cfg)
        for net in (new_net, reused_net):
            net.load_state_dict(home.state_dict())
        if load:
            load_travelling_state(new, travelling_state(home_opt))
            load_travelling_state(reused, travelling_state(home_opt))
        else:
            reset_optimizer(reused, cfg)
        assert _fit(new_net, new, _batches(2, seed=5)) == _fit(reused_net, reused, _batches(2, seed=5))
        assert _same(new_net, reused_net)


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_the_optimisers_are_torchs_step_for_step_with_hooks_and_state_dicts(kind):
    # fedsim's Adam/AdamW/SGD drop torch's TorchDynamo decorators only: the same parameters after
    # every step as torch's own, the step hooks called, the state dict round trip identical
    from fedsim.optim import SGD, Adam, AdamW

    ours_cls, ref_cls = {"adam": (Adam, torch.optim.Adam), "adamw": (AdamW, torch.optim.AdamW),
                         "sgd": (SGD, torch.optim.SGD)}[kind]
    kw = {"lr": 0.05, "weight_decay": 0.01, **({"momentum": 0.9} if kind == "sgd" else {})}
    ours_net, ref_net = _model(3), _model(3)
    ours, ref = ours_cls(ours_net.parameters(), **kw), ref_cls(ref_net.parameters(), **kw)
    assert isinstance(ours, ref_cls)
    calls = []
    ours.register_step_post_hook(lambda *_: calls.append(1))
    for x, y in _batches(4):
        for net, opt in ((ours_net, ours), (ref_net, ref)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        assert torch.is_grad_enabled()
        for p, q in zip(ours_net.parameters(), ref_net.parameters(), strict=True):
            assert torch.equal(p, q)
    assert len(calls) == 4
    state = ours.state_dict()
    assert str(state) == str(ref.state_dict())
    again = ours_cls(_model(3).parameters(), **kw)
    again.load_state_dict(state)
    assert str(again.state_dict()) == str(state)
