"""FedEFM: the distributed run equals a sequential re-computation of eq. 1–3 and 11, placement
does not change the foundation model, and the distillation step behaves as the equations say.

The checks that need no process: tests/unit/algorithms/test_fedefm.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fedsim.config import load_config
from fedsim.models import build_model
from tests.harness import (
    EFM,
    REPO,
    TINY,
    reference_fedefm,
)
from tests.integration.harness import run_distributed

DIRECTED = {"name": "directed-4", "silos": 4, "directed": True,
            "edges": [[0, 1], [1, 2], [2, 3], [3, 0], [0, 2]]}


def _assert_equal_to_reference(tmp_path, overrides, scenario="dfl"):
    got = run_distributed(tmp_path, overrides, nproc=2)
    models = reference_fedefm(overrides, scenario)
    for i, model in enumerate(models):
        for a, b in zip(got[i], model.state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_aggregate_end_equals_sequential_equations(tmp_path):
    """The ablation with Θ only at the end: eq. 1–3 and 11, no mixing (the pre-issue-10 run)."""
    _assert_equal_to_reference(tmp_path, EFM + ["name=efm", "fedefm.aggregate=end"])


@pytest.mark.parametrize("mix", ["hosted", "experts", "gossip"])
def test_dfl_mixing_every_round_equals_sequential_on_the_ring(tmp_path, mix):
    _assert_equal_to_reference(tmp_path, EFM + ["name=efm", f"fedefm.mix={mix}"])


@pytest.mark.parametrize("mix", ["hosted", "gossip"])
def test_dfl_mixing_every_round_equals_sequential_on_a_directed_graph(tmp_path, mix):
    import yaml

    path = tmp_path / "directed.yaml"
    path.write_text(yaml.safe_dump(DIRECTED))
    _assert_equal_to_reference(tmp_path, EFM + ["name=efm", f"topology={path}", f"fedefm.mix={mix}"])


def test_cfl_restarts_every_silo_from_theta_every_round(tmp_path):
    _assert_equal_to_reference(tmp_path, EFM + ["name=efm", "scenario=cfl"], scenario="cfl")


TRAVELS = ["train.optimizer=adamw", "train.lr_schedule=sqrt", "train.weight_decay=0.01",
           "fedefm.expert_optimizer=travels", "rounds=3"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_travelling_optimiser_equals_deep_copies_of_model_and_optimiser(tmp_path, nproc):
    """expert_optimizer travels: θ_i visits with its AdamW moments, step count and sqrt-schedule
    position, as a deep copy of the released code's model object does; the expert returns as
    weights, the student keeps its own optimiser, the host mixes the expert's weights."""
    overrides = EFM + TRAVELS + ["name=t"]
    got = run_distributed(tmp_path, overrides, nproc=nproc)
    want = reference_fedefm(overrides, travels=True)
    for i, model in enumerate(want):
        for a, b in zip(got[i], model.state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the reference is not blind to what travels: fresh optimisers at the hosts give other weights
    fresh = reference_fedefm(EFM + TRAVELS[:3] + ["rounds=3"])
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(want[0].state_dict().values(), fresh[0].state_dict().values()))


def test_a_travelling_optimiser_is_sent_and_counted(tmp_path):
    """What θ_i's message carries under travels: the model plus AdamW's two moments and a step
    count per parameter and the schedule's count; the returned expert is the model alone. The
    simulated clock charges the heavier request leg."""
    from fedsim.callbacks.jsonl import read_records

    base = EFM + TRAVELS[:3] + ["net.compute_ms=1"]
    run_distributed(tmp_path, base + ["name=fresh"])
    run_distributed(tmp_path, base + ["name=travels", "fedefm.expert_optimizer=travels"])
    model = build_model(_cfg().model, 6)
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = list(model.parameters())
    rider = 2 * sum(p.numel() * 4 for p in params) + 4 * len(params) + 8  # exp_avg, exp_avg_sq, step; schedule
    fresh, travels = read_records(tmp_path / "fresh")[1], read_records(tmp_path / "travels")[1]
    for a, b in zip(sorted(fresh, key=lambda r: r["silo"]), sorted(travels, key=lambda r: r["silo"])):
        assert a["bytes_by_dst"] == {d: 2 * model_bytes for d in a["bytes_by_dst"]}  # out and back
        assert b["bytes_by_dst"] == {d: 2 * model_bytes + rider for d in a["bytes_by_dst"]}
        assert b["sim_time_ms"] > a["sim_time_ms"]


@pytest.mark.parametrize("backend,normalize,nproc", [
    ("exact", True, 2), ("exact", False, 1), ("uniform", False, 2), ("sinkhorn", True, 1),
])
def test_recorded_teacher_weights_and_loss_parts_equal_the_sequential_steps(tmp_path, backend, normalize, nproc):
    """Each distilling round's record holds the means over its steps of s_ij (before clamp), of
    the w_ij used and of the two loss parts, as the written-out steps compute them; round 0
    (local training) has none of these keys."""
    from fedsim.callbacks.jsonl import read_records

    overrides = EFM + ["name=w", "rounds=3", f"emd.backend={backend}", f"emd.normalize={str(normalize).lower()}"]
    run_distributed(tmp_path, overrides, nproc=nproc)
    trace: dict = {}
    reference_fedefm(overrides, trace=trace)
    by_round = read_records(tmp_path / "w")
    keys = ("teacher_weights", "teacher_similarity", "kd_loss", "ce_loss")
    assert all(not set(keys) & rec.keys() for rec in by_round[0])
    assert sorted(trace) == [(k, i) for k in (1, 2) for i in range(4)]
    for (k, i), (teachers, steps) in trace.items():
        rec = next(r for r in by_round[k] if r["silo"] == i)

        def mean(key, j=None, steps=steps):
            return sum(st[key] if j is None else st[key][j] for st in steps) / len(steps)

        assert rec["teacher_weights"].keys() == {str(j) for j in teachers}
        for n, j in enumerate(teachers):
            assert rec["teacher_weights"][str(j)] == pytest.approx(mean("weights", n), abs=1e-5)
            if backend != "uniform":
                assert rec["teacher_similarity"][str(j)] == pytest.approx(mean("similarity", n), abs=1e-5)
        if backend == "uniform":
            assert "teacher_similarity" not in rec
            assert set(rec["teacher_weights"].values()) == {1.0}
        elif normalize:
            assert sum(rec["teacher_weights"].values()) == pytest.approx(1.0, abs=1e-6)
        assert rec["kd_loss"] == pytest.approx(mean("kd_loss"), abs=1e-5)
        assert rec["ce_loss"] == pytest.approx(mean("ce_loss"), abs=1e-5)
        assert rec["loss"] == pytest.approx(mean("loss"), abs=1e-5)
        assert rec["kd_loss"] + rec["ce_loss"] == pytest.approx(rec["loss"], abs=1e-6)


def test_a_silo_without_teachers_records_no_teacher_weights(tmp_path):
    """Both of silo 0's links are down in round 1: it has no teacher (it trains locally) and its
    record has no teacher keys, while its neighbours record the teachers they did hear from."""
    from fedsim.callbacks.jsonl import read_records

    run_distributed(tmp_path, EFM + ["name=d", "faults.links=[{edge: [0, 1], start: 1, end: 1}, "
                                                "{edge: [0, 3], start: 1, end: 1}]"])
    got = {r["silo"]: r for r in read_records(tmp_path / "d")[1]}
    assert not {"teacher_weights", "teacher_similarity", "kd_loss", "ce_loss"} & got[0].keys()
    assert {i: sorted(got[i]["teacher_weights"]) for i in (1, 2, 3)} == {1: ["2"], 2: ["1", "3"], 3: ["2"]}
    assert all(got[i]["teacher_similarity"].keys() == got[i]["teacher_weights"].keys() for i in (1, 2, 3))
    assert got[1]["teacher_weights"]["2"] == pytest.approx(1.0)  # normalised over a single teacher


def test_placement_does_not_change_the_foundation(tmp_path):
    foundations = []
    for nproc in (1, 2, 4):
        out = tmp_path / f"n{nproc}"
        subprocess.run(
            [sys.executable, "-m", "fedsim", "run", "--nproc", str(nproc), "--quiet",
             *[f"--set={o}" for o in TINY + EFM + [f"output_dir={out}", "name=p", "compare_with=[]",
                                                   "downstream.enabled=false"]]],
            check=True, cwd=REPO, capture_output=True,
        )
        foundations.append(torch.load(out / "p" / "foundation.pt"))
    for other in foundations[1:]:
        assert other.keys() == foundations[0].keys()
        for key in other:
            assert torch.equal(other[key], foundations[0][key]), key


def _cfg(extra=()):
    return load_config(None, TINY + EFM + list(extra))
