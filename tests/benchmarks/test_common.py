"""The benchmarks' shared helpers: mean ± std over seeds (by hand), seed parsing, and the
validation split — disjoint from what the silos train on, and an in-process run on it equal to
a sequential re-computation written out here."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.common import (
    Stat,
    carve_validation,
    mean_std,
    over_seeds,
    parse_seeds,
    seed_key,
    validation_curve,
)
from fedsim.config import load_config
from fedsim.data import load_federated
from fedsim.models import build_model
from fedsim.runner import scenario_for
from fedsim.runtime import BatchStream, evaluate, make_optimizer, silo_seed, train_steps
from tests.algorithms.test_equivalence import TINY

REPO = Path(__file__).resolve().parents[2]


def test_mean_and_sample_std_by_hand():
    s = mean_std([0.40, 0.42, 0.47])
    # mean 0.43; deviations −0.03, −0.01, 0.04 → Σ² = 26e-4, / (n − 1) = 13e-4
    assert s.mean == pytest.approx(0.43) and s.std == pytest.approx(math.sqrt(13e-4)) and s.n == 3
    assert s.format() == "43.0 ± 3.6"
    assert s.format(scale=1.0, digits=3) == "0.430 ± 0.036"
    assert mean_std([0.5]).format() == "50.0 ± 0.0"  # one seed: no spread to report
    assert mean_std([None, float("nan"), 0.2, 0.4]).values == (0.2, 0.4)  # cells a run did not produce
    assert Stat().format() == "–" and math.isnan(Stat().mean)


def test_over_seeds_collects_every_cell_per_seed_in_order():
    calls = []

    def run_seed(seed):
        calls.append(seed)
        cells = {("a", 1): 0.1 * seed, "b": 1.0 + seed}
        if seed != 5:
            cells["only_some"] = 2.0
        return cells

    stats = over_seeds([3, 5, 4], run_seed)
    assert calls == [3, 5, 4]
    assert list(stats) == [("a", 1), "b", "only_some"]
    assert stats["a", 1].values == pytest.approx((0.3, 0.5, 0.4))
    assert stats["b"].mean == pytest.approx(5.0) and stats["b"].std == pytest.approx(1.0)
    assert stats["only_some"].n == 2
    assert seed_key("mdhfl_mu20", 2) == "mdhfl_mu20_s2"


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5,9") == [3, 4, 5, 9]
    for bad in ("x", "1,1", "5-3", "-1", "", "0-2,2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)


def test_bad_seeds_on_the_command_line_are_one_line_exit_2():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "paper_tables.py"), "mdhfl", "--seeds", "1,x"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].endswith("seeds must look like 0,1,2 or 0-4, got '1,x'")


def test_validation_split_is_disjoint_seeded_and_covers_every_silo():
    cfg = load_config(None, TINY + ["data.label_noise=0.3"])
    data = load_federated(cfg.data, 4, cfg.seed)
    kept, val = carve_validation(data.train, 0.25, seed=0)
    assert [len(k) for k in kept] == [24] * 4 and len(val) == 32
    for ds, k, part in zip(data.train, kept, torch.split(val.images, 8), strict=True):
        rows = {tuple(x.flatten().tolist()) for x in ds.images}
        held = {tuple(x.flatten().tolist()) for x in part}
        assert held <= rows and held.isdisjoint(tuple(x.flatten().tolist()) for x in k.images)
    assert not torch.equal(val.labels, val.clean_labels)  # the silos' own (noisy) labels are kept
    again = carve_validation(data.train, 0.25, seed=0)[1]
    other = carve_validation(data.train, 0.25, seed=1)[1]
    assert torch.equal(again.images, val.images) and not torch.equal(other.images, val.images)
    with pytest.raises(ValueError):
        carve_validation(data.train, 1.0, seed=0)


def test_validation_curve_equals_sequential_training_on_the_rest():
    overrides = ["algorithm=fedavg", "scenario=standalone", "rounds=2", "train.local_steps=2"]
    cfg = load_config(None, TINY + overrides)
    cfg.scenario = scenario_for(cfg)
    got = validation_curve(cfg, [1, 2], fraction=0.25)
    assert got[1]["foundation"] is not None  # a weight-sharing run also scores its Θ
    # written out: each silo alone on its kept part (seeded init, its own batch stream), scored on the pool
    torch.set_num_threads(1)
    data = load_federated(cfg.data, 4, cfg.seed)
    kept, val = carve_validation(data.train, 0.25, cfg.seed)
    scores = []
    for i in range(4):
        torch.manual_seed(cfg.seed)
        m = build_model(cfg.model, data.num_classes)
        stream = BatchStream(kept[i], cfg.train.batch_size, silo_seed(cfg.seed, i), torch.device("cpu"))
        train_steps(m, make_optimizer(m, cfg), stream, 2 * cfg.train.local_steps, None)
        scores.append(evaluate(m, val, torch.device("cpu"))[1])
    assert got[2]["silos"] == pytest.approx(scores, abs=1e-9)
    assert got[2]["mean_silo"] == pytest.approx(sum(scores) / 4, abs=1e-9)
