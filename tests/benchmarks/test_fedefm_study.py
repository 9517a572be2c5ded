"""``fedefm_study.py``'s statistics, against hand-worked values: the teacher-weight statistics read
from metric records and the learning curve (its paired 95% interval is ``fedsim.stats.paired_ci``:
tests/unit/test_stats.py)."""

from __future__ import annotations

import sys

import pytest

from fedsim.stats import paired_ci
from tests.harness import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import fedefm_study as study  # noqa: E402


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


def test_the_study_reports_fedsim_stats_interval():
    assert study.paired_ci is paired_ci  # one implementation, tested in tests/unit/test_stats.py
