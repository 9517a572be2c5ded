"""``log.tensorboard: true``: the event files hold the same numbers as ``metrics/*.jsonl``."""

from __future__ import annotations

import pytest

from fedsim.callbacks.jsonl import read_records
from tests.integration.harness import run_distributed


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_files_hold_the_jsonl_numbers_by_round_and_by_simulated_time(tmp_path):
    run_distributed(tmp_path, ["algorithm=fedavg", "name=tb", "log.tensorboard=true", "train.eval_every=1",
                               "data.validation_fraction=0.25", "rounds=3"])
    run_dir = tmp_path / "tb"
    got = _scalars(run_dir / "tensorboard")
    rounds = read_records(run_dir)
    assert sorted(rounds) == [0, 1, 2]
    for k, recs in rounds.items():
        sim_ms = int(round(max(r["sim_time_ms"] for r in recs)))
        expected = {f"silo_{r['silo']}/{key}": r[key] for r in recs for key in ("accuracy", "loss", "test_loss")}
        expected["silos/mean_accuracy"] = sum(r["accuracy"] for r in recs) / len(recs)
        expected["foundation/accuracy"] = recs[0]["foundation_accuracy"]
        expected["foundation/val_accuracy"] = recs[0]["foundation_val_accuracy"]
        for tag, value in expected.items():
            assert dict(got[f"round/{tag}"])[k] == pytest.approx(value, rel=1e-6), tag
            assert dict(got[f"sim_time_ms/{tag}"])[sim_ms] == pytest.approx(value, rel=1e-6), tag
    assert len(got["round/silo_0/accuracy"]) == 3


def test_no_event_files_unless_asked(tmp_path):
    run_distributed(tmp_path, ["algorithm=fedavg", "name=plain", "rounds=1"])
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_fedefm_teacher_weights_and_loss_parts_are_scalars_per_silo(tmp_path):
    efm = ["algorithm=fedefm", "topology=ring-4", "fedefm.overseas_steps=1", "fedefm.distill_steps=2", "emd.grid=2"]
    run_distributed(tmp_path, efm + ["name=efm", "log.tensorboard=true"])
    got = _scalars(tmp_path / "efm" / "tensorboard")
    rounds = read_records(tmp_path / "efm")
    expected: dict[str, float] = {}
    for rec in rounds[1]:
        i = rec["silo"]
        expected[f"silo_{i}/kd_loss"], expected[f"silo_{i}/ce_loss"] = rec["kd_loss"], rec["ce_loss"]
        for j in ((i - 1) % 4, (i + 1) % 4):
            expected[f"silo_{i}/teacher_weight/{j}"] = rec["teacher_weights"][str(j)]
            expected[f"silo_{i}/teacher_similarity/{j}"] = rec["teacher_similarity"][str(j)]
    assert len(expected) == 4 * 6
    for tag, value in expected.items():
        assert got[f"round/{tag}"] == [(1, pytest.approx(value, rel=1e-6))], tag  # round 0 does not distil
