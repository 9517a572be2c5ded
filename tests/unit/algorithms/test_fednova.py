"""FedNova (Wang et al., NeurIPS 2020): the momentum a_i in closed form equals its definition, and
what FedNova is not defined for is one line."""

from __future__ import annotations

import pytest

from tests.harness import TINY


def a_norm(steps: int, rho: float) -> float:
    """‖a_i‖₁ from its definition: a step j of τ (from 0) carries Σ_{s<τ−j} ρ^s of its gradient."""
    return float(sum(sum(rho ** s for s in range(steps - j)) for j in range(steps)))


def test_momentum_a_i_closed_form_is_its_definition():
    from fedsim.algorithms.fednova import step_weight_norm

    for steps in (1, 2, 5, 10):
        for rho in (0.0, 0.5, 0.9):
            assert step_weight_norm(steps, rho) == pytest.approx(a_norm(steps, rho), rel=1e-12)


@pytest.mark.parametrize("extra,match", [
    (["train.optimizer=adam"], "set train.optimizer: sgd"),
    (["train.optimizer=sgd", "train.lr_schedule=sqrt"], "set train.lr_schedule: constant"),
])
def test_what_fednova_is_not_defined_for_is_one_line(extra, match):
    from fedsim.errors import ConfigError
    from fedsim.experiment import resolve_config

    with pytest.raises(ConfigError, match=match) as err:
        resolve_config(None, TINY + ["algorithm=fednova", "compare_with=[]", "downstream.enabled=false", *extra])
    assert "\n" not in str(err.value)
