"""Simulated faults: the schedule is a pure function of the config and the round, and a straggler
past the deadline keeps the steps that fit."""

from __future__ import annotations

import pytest

from fedsim.config import load_config
from tests.harness import TINY


def test_the_schedule_is_a_pure_function_of_the_config_and_the_round():
    from fedsim.faults import FaultSchedule

    cfg = load_config(None, TINY + ["rounds=20", "faults.participation=0.6", "faults.sampling=bernoulli",
                                    "faults.stragglers=[{silo: 1, factor: 4, probability: 0.5}]",
                                    "faults.deadline=3"])
    a, b = FaultSchedule(cfg, 4), FaultSchedule(cfg, 4)
    rounds = [a.round(k) for k in range(20)]
    assert rounds == [b.round(k) for k in reversed(range(20))][::-1]  # any order, any process: the same
    drawn = {len(r.present) + sum(why == "deadline" for why in r.absent.values()) for r in rounds}
    assert len(drawn) > 1 and min(drawn) >= 1  # bernoulli: the number drawn varies, never zero
    slow = [r for r in rounds if 1 in r.factors]
    assert 0 < len(slow) < 20 and all(r.factors[1] == 4 for r in slow)
    assert all(r.absent.get(1) in ("deadline", "not_sampled") for r in slow)  # 4x is past the 3x deadline
    other_seed = FaultSchedule(load_config(None, TINY + ["rounds=20", "seed=1", "faults.participation=0.6",
                                                          "faults.sampling=bernoulli"]), 4)
    assert [r.present for r in rounds] != [other_seed.round(k).present for k in range(20)]


def test_past_the_deadline_a_partial_straggler_keeps_the_steps_that_fit():
    from fedsim.errors import ConfigError
    from fedsim.faults import FaultSchedule

    stragglers = "faults.stragglers=[{silo: 0, factor: 1.5}, {silo: 1, factor: 3}, {silo: 2, factor: 10}]"
    common = TINY + ["train.local_steps=8", stragglers, "faults.deadline=1.2"]
    partial = FaultSchedule(load_config(None, common + ["faults.past_deadline=partial"]), 4).round(0)
    # ⌊8 · 1.2 / 1.5⌋ = 6, ⌊8 · 1.2 / 3⌋ = 3, ⌊8 · 1.2 / 10⌋ = 0: that one cannot finish a step in time
    assert partial.local_steps == {0: 6, 1: 3} and partial.absent == {2: "deadline"}
    assert partial.compute_scale(8) == {0: 1.5 * 6 / 8, 1: 3 * 3 / 8, 2: 10.0}
    dropped = FaultSchedule(load_config(None, common), 4).round(0)
    assert dropped.local_steps == {} and dropped.absent == dict.fromkeys((0, 1, 2), "deadline")
    with pytest.raises(ConfigError, match="give faults.deadline"):
        load_config(None, TINY + [stragglers, "faults.past_deadline=partial"])
