"""``fedefm_study.py``'s statistics, against hand-worked values: the paired 95% interval and the
teacher-weight statistics read from metric records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import fedefm_study as study  # noqa: E402


def test_paired_interval_is_the_t_interval_of_the_seed_by_seed_differences():
    arm = {0: 0.50, 1: 0.60, 2: 0.55, 3: None}
    whole = {0: 0.40, 1: 0.45, 2: 0.50, 3: 0.70}
    ci = study.paired_ci(arm, whole)
    # differences 0.10, 0.15, 0.05 (seed 3 has no pair): mean 0.10, sd 0.05, t(0.975, 2) = 4.302653
    assert ci["n"] == 3 and ci["values"] == pytest.approx([0.10, 0.15, 0.05])
    assert ci["mean"] == pytest.approx(0.10)
    assert ci["half_width"] == pytest.approx(4.302653 * 0.05 / 3 ** 0.5, rel=1e-5)
    assert study.paired_ci({0: 0.5}, {0: 0.4}) is None  # one pair: no interval


def test_weight_statistics_from_records():
    records = {
        0: [{"round": 0}, {"round": 1, "teacher_weights": {"1": 0.2, "3": 0.8}, "teacher_similarity": {"1": 0.1, "3": 0.4}}],
        2: [{"round": 1, "teacher_weights": {"1": 0.4, "3": 0.6}, "teacher_similarity": {"1": 0.3, "3": 0.5}}],
        1: [{"round": 1, "teacher_weights": {"0": 0.5, "2": 0.5}}],
    }
    got = study.weight_stats(records, corrupted=1)
    assert got["w_mean"] == pytest.approx((0.2 + 0.8 + 0.4 + 0.6 + 0.5 + 0.5) / 6)
    assert got["s_mean"] == pytest.approx((0.1 + 0.4 + 0.3 + 0.5) / 4)
    assert got["w_spread"] == pytest.approx((0.6 + 0.2 + 0.0) / 3)
    assert got["w_corrupted"] == pytest.approx((0.2 + 0.4) / 2)  # silos 0 and 2: teacher trained on silo 1
    assert got["w_clean"] == pytest.approx((0.8 + 0.6) / 2)
    assert study.weight_stats({0: [{"round": 0}]}, None)["w_mean"] is None


def test_curve_accumulates_the_mean_steps_of_the_silos():
    records = {0: [{"round": 0, "grad_steps": 10, "foundation_accuracy": 0.2},
                   {"round": 1, "grad_steps": 30, "foundation_accuracy": 0.4}],
               1: [{"round": 0, "grad_steps": 10, "foundation_accuracy": 0.2},
                   {"round": 1, "grad_steps": 20, "foundation_accuracy": 0.4}]}
    assert study.curve(records) == ([10.0, 35.0], [0.2, 0.4])
