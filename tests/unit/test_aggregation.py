"""The robust rules of ``aggregation:`` against independent computations written here from their
definitions (numpy on the stacked inputs; Krum from Blanchard et al. 2017), and the checks that
refuse a rule that cannot serve the run before any rank starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.aggregation import Aggregation, combine_local, krum, weighted_median, weighted_trimmed_mean
from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.plan import resolve
from tests.harness import krum_by_definition


def replicated(x: np.ndarray, counts: list[int]) -> np.ndarray:
    """Each row repeated as many times as its integer weight: an input of weight w counts as w
    copies, the definition both weighted rules reduce to."""
    return np.repeat(x, counts, axis=0)


def median_by_definition(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per column, the midpoint of the set of minimisers of Σ_i w_i |x_i − v| (the objective is
    piecewise linear and convex, so its minimisers among the data points bound that set)."""
    out = []
    for col in x.T:
        cost = np.array([(w * np.abs(col - v)).sum() for v in col])
        best = col[np.isclose(cost, cost.min(), rtol=0, atol=1e-12)]
        out.append((best.min() + best.max()) / 2)
    return np.array(out)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_the_median_with_equal_weights_is_numpys_median(rng):
    for n in (1, 2, 3, 4, 5, 11):
        x = rng.normal(size=(n, 9))
        np.testing.assert_allclose(weighted_median(t(x), t(np.ones(n))).numpy(), np.median(x, axis=0), rtol=0, atol=0)


def test_the_weighted_median_is_the_midpoint_of_the_minimisers(rng):
    x = rng.normal(size=(6, 40))
    x[:, :5] = np.round(x[:, :5])  # ties among the values
    for w in ([1, 2, 3, 1, 1, 2], [0.3, 0.3, 0.2, 0.1, 0.05, 0.05], [5, 1, 1, 1, 1, 1]):
        w = np.asarray(w, dtype=float)
        np.testing.assert_allclose(weighted_median(t(x), t(w)).numpy(), median_by_definition(x, w), rtol=0, atol=1e-12)
    counts = [1, 2, 3, 1, 1, 2]  # integer weights: the ordinary median of the replicated rows
    np.testing.assert_allclose(weighted_median(t(x), t(counts)).numpy(), np.median(replicated(x, counts), axis=0),
                               rtol=0, atol=1e-12)


def test_the_weighted_trimmed_mean_trims_weight_from_each_end(rng):
    from scipy.stats import trim_mean

    x = rng.normal(size=(8, 30))
    for beta in (0.0, 0.125, 0.25, 0.375):  # equal weights, βn whole: βn inputs dropped at each end
        np.testing.assert_allclose(weighted_trimmed_mean(t(x), t(np.ones(8)), beta).numpy(),
                                   trim_mean(x, beta, axis=0), rtol=0, atol=1e-12)
    counts, beta = [1, 2, 3, 2, 2, 1, 3, 2], 0.15  # W = 16, βW = 2.4: cuts inside an input's weight
    k = 5  # replicate each input 5w times: β·5W = 12 copies cut at each end, exactly
    rows = replicated(x, [k * c for c in counts])
    expected = np.sort(rows, axis=0)[12:-12].mean(0)
    np.testing.assert_allclose(weighted_trimmed_mean(t(x), t(counts), beta).numpy(), expected, rtol=0, atol=1e-12)


def test_krum_is_blanchards_rule(rng):
    honest = rng.normal(size=(9, 20))
    byzantine = honest[:2] + 50.0  # two far away, together
    x = np.concatenate([honest, byzantine])
    for f, m in ((2, 1), (1, 1), (2, 4), (0, 3)):
        got = krum(t(x), t(np.ones(11)), f, m).numpy()
        np.testing.assert_allclose(got, krum_by_definition(x, f, m), rtol=0, atol=1e-12)
    assert np.abs(krum(t(x), t(np.ones(11)), 2).numpy()).max() < 10  # an honest input wins
    assert np.abs(x.mean(0)).max() > 5  # where the mean is pulled away
    w = rng.uniform(0.5, 2, size=11)  # weights weigh multi-Krum's mean, not the choice
    np.testing.assert_allclose(krum(t(x), t(w), 2, 4).numpy(), krum_by_definition(x, 2, 4, w), rtol=0, atol=1e-12)


def test_krum_with_fewer_inputs_tolerates_what_fits(rng):
    x = rng.normal(size=(5, 6))  # 5 inputs: f' = 1 whatever krum_f says
    np.testing.assert_allclose(krum(t(x), t(np.ones(5)), 3).numpy(), krum_by_definition(x, 1), rtol=0, atol=1e-12)
    two = rng.normal(size=(2, 6))  # Krum cannot choose between two: their weighted median
    np.testing.assert_allclose(krum(t(two), t([1.0, 3.0]), 1).numpy(), two[1], rtol=0, atol=0)


def test_weight_zero_leaves_an_input_out(rng):
    x = rng.normal(size=(5, 7))
    x[2] = 1e6  # ϑ = 0: whatever it holds must not count
    w = t([1, 1, 0, 1, 1])
    for rule in (Aggregation("median"), Aggregation("trimmed_mean", trim=0.25), Aggregation("krum", krum_f=0)):
        np.testing.assert_allclose(rule.combine_rows(t(x), w).numpy(),
                                   rule.combine_rows(t(np.delete(x, 2, axis=0)), t(np.ones(4))).numpy(), rtol=0, atol=0)


def test_a_mix_under_a_rule_keeps_the_silos_own_integer_buffers(rng):
    own = [torch.randn(3, 2), torch.tensor(7)]
    received = {j: [torch.randn(3, 2), torch.tensor(100 + j)] for j in (4, 1)}
    weights = {0: 0.5, 1: 0.25, 4: 0.25}
    out = combine_local(Aggregation("median"), own, weights, 0, received)
    stack = np.stack([own[0].double().numpy().ravel()] + [received[j][0].double().numpy().ravel() for j in (1, 4)])
    expected = median_by_definition(stack, np.array([0.5, 0.25, 0.25]))
    np.testing.assert_allclose(out[0].numpy().ravel(), expected.astype(np.float32), rtol=0, atol=0)
    assert out[0].dtype == torch.float32 and int(out[1]) == 7


BASE = ["rounds=1", "downstream.enabled=false", "compare_with=[]", "topology=ring-4"]


@pytest.mark.parametrize("extra, message", [
    (["algorithm=fedavg", "aggregation=krum"],
     "aggregation: krum with krum_f 1 needs more than 2·1 + 2 = 4 inputs, and the CFL server and Θ"),
    (["algorithm=gossip", "aggregation=krum", "topology=ring:8"],
     "and silo 0's mix (itself and 2 neighbour(s) on ring-8) has 3; use krum_f <= 0"),
    (["algorithm=fedefm_released", "aggregation=krum", "krum_f=0", "topology=ring:8", "krum_m=4"],
     "krum_m 4 averages more inputs than Krum keeps: silo 0.s mix"),
    (["algorithm=fedavg", "aggregation=krum", "krum_f=0", "accumulation_status=[1, 1, 0, 0]"],
     "Krum needs at least 3"),
    (["algorithm=fedmd", "aggregation=median"], "algorithm 'fedmd' exchanges only outputs"),
    (["algorithm=fedavg", "aggregation=median", "privacy.mode=client", "privacy.noise_multiplier=1"],
     "DP-FedAvg calibrates its noise to the mean"),
    (["aggregation=trimmed_mean", "aggregation_trim=0.5"], "'aggregation_trim' expects float >= 0 and < 0.5"),
    (["aggregation=mode"], "'aggregation' expects one of 'mean', 'median', 'trimmed_mean', 'krum'"),
])
def test_a_rule_that_cannot_serve_the_run_is_refused_before_any_rank(extra, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        resolve(load_config(None, BASE + extra))


def test_krum_that_fits_passes_the_checks():
    resolve(load_config(None, BASE + ["algorithm=gossip", "aggregation=krum", "krum_f=0"]))
    resolve(load_config(None, BASE + ["algorithm=fedavg", "aggregation=krum", "krum_f=2", "topology=gaia"]))
