"""SCAFFOLD (Karimireddy et al., ICML 2020, option II) equals a sequential re-computation of its
Algorithm 1 on 1 and 2 gloo ranks — with a silo that sits a round out keeping its c_i, and under
DP-SGD (the correction added to the private gradient) — counts the variates' bytes, and refuses
what it is not defined for in one line.

The checks that need no process: tests/unit/algorithms/test_scaffold.py."""

from __future__ import annotations

import pytest
import torch

from tests.harness import assert_models, models_of, scaffold_reference
from tests.integration.harness import run_states

SGD = ["algorithm=scaffold", "train.optimizer=sgd", "train.momentum=0", "train.lr=0.01", "scaffold.server_lr=0.8",
       "rounds=3"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_scaffold_is_algorithm_1_option_2_and_an_absent_silo_keeps_its_variate(tmp_path, nproc):
    overrides = SGD + ["faults.dropout=[{silo: 1, start: 1, end: 1}]"]
    states, records = run_states(tmp_path, overrides, nproc)
    models, c_i = scaffold_reference(overrides, absent={1: {1}})
    assert_models(models_of(states), models)
    for i in range(4):
        for a, b in zip(states[i]["algorithm"]["c_i"], c_i[i], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert float(sum((t ** 2).sum() for t in c_i[1])) > 0  # silo 1's variate is not a fresh zero
    # the model and its variate go up, x and c come down: twice the cnn (whose state is parameters)
    model = sum(t.numel() * t.element_size() for t in models_of(states)[0])
    for r in records:
        if r["participated"]:
            assert r["bytes_by_dst"] == {"server": 2 * model} and r["bytes_from_server"] == 2 * model, r
        else:
            assert r["bytes_sent"] == 0 and "bytes_from_server" not in r


def test_scaffold_under_dp_sgd_corrects_the_private_gradient(tmp_path):
    """DP-SGD with σ = 0 and a bound no gradient reaches is plain SGD: the run equals the
    non-private reference only if the correction reaches the gradient Opacus hands the optimiser
    (Opacus sums per-sample gradients in another order: ~1e-8, which this small net's steps grow
    to ~1e-6 in two rounds; the correction itself moves the weights by ~1e-3)."""
    plain = SGD + ["rounds=2"]
    overrides = plain + ["privacy.mode=sample", "privacy.noise_multiplier=0", "privacy.max_grad_norm=1e6",
                         "privacy.sampling=shuffle", "privacy.delta=0.01"]
    states, records = run_states(tmp_path, overrides, 2)
    models, _ = scaffold_reference(plain)
    assert_models(models_of(states), models, atol=1e-5)
    assert all(r["dp_steps"] == 2 * (r["round"] + 1) for r in records)
