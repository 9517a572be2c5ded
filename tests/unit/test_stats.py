"""``fedsim.stats``: mean ± std and the paired t interval against hand-worked values, and the one
convention for missing values and a single seed."""

from __future__ import annotations

import math

import pytest

from fedsim.stats import mean_std, paired_ci, present, t_quantile


def test_mean_and_sample_std_by_hand():
    # 1, 2, 4: mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9, over n − 1 = 2 → 7/3
    mean, std = mean_std([1, 2, 4])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(math.sqrt(7 / 3))
    # 0.5 and 0.7: mean 0.6, deviations ±0.1, (0.01 + 0.01) / 1 → std √0.02
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))


def test_missing_values_are_left_out_and_one_value_has_no_std():
    assert mean_std([1, None, 2, float("nan"), 4]) == mean_std([1, 2, 4])
    assert present([None, float("nan"), 3, True, 2.5]) == [3.0, 2.5]  # a flag is not a measurement
    assert mean_std([0.25]) == (0.25, None)  # a sample std needs two values
    assert mean_std([None, float("nan")]) == (None, None)
    assert mean_std([]) == (None, None)


def test_t_quantile_is_students_two_sided_95_percent_point():
    # tables of Student's t, 0.975 quantile: 1 df 12.706205, 2 df 4.302653, 10 df 2.228139
    assert t_quantile(2) == pytest.approx(12.706205, rel=1e-6)
    assert t_quantile(3) == pytest.approx(4.302653, rel=1e-6)
    assert t_quantile(11) == pytest.approx(2.228139, rel=1e-6)
    assert t_quantile(3, level=0.90) == pytest.approx(2.919986, rel=1e-6)  # 0.95 quantile, 2 df
    with pytest.raises(ValueError):
        t_quantile(1)


def test_paired_interval_is_the_t_interval_of_the_seed_by_seed_differences():
    arm = {0: 0.50, 1: 0.60, 2: 0.55, 3: None, 4: 0.9}
    whole = {0: 0.40, 1: 0.45, 2: 0.50, 3: 0.70, 4: float("nan")}
    ci = paired_ci(arm, whole)
    # differences 0.10, 0.15, 0.05 (seeds 3 and 4 have no pair): mean 0.10, sd 0.05, t(0.975, 2) = 4.302653
    assert ci["n"] == 3 and ci["values"] == pytest.approx([0.10, 0.15, 0.05])
    assert ci["mean"] == pytest.approx(0.10)
    assert ci["half_width"] == pytest.approx(4.302653 * 0.05 / 3 ** 0.5, rel=1e-5)
    assert paired_ci({0: 0.5}, {0: 0.4}) is None  # one pair: no interval
    assert paired_ci({0: 0.5, 1: 0.6}, {2: 0.4}) is None  # no seed in both
