"""``fedsim.experiment``: prepare → launch → finish from Python, as ``fedsim run``, ``fedsim sweep``
and the benchmarks call it. Real spawned gloo ranks; the references are runs made another way
(alone instead of sharing a process group) and the files the run wrote.

The checks that need no process: tests/unit/test_experiment.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fedsim.experiment import ExperimentResult, finish, launch_together, prepare, run

TINY = ["rounds=2", "train.local_steps=2", "train.batch_size=8", "data.samples_per_silo=32",
        "data.test_samples=16", "data.image_size=16", "model.width=4", "algorithm=gossip",
        "compare_with=[]", "downstream.enabled=false", "device=cpu"]


def _foundation(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "foundation.pt", weights_only=True)


def test_a_run_returns_what_it_wrote_and_never_overwrites_a_run(tmp_path):
    sets = [*TINY, f"output_dir={tmp_path}", "name=r", "compare_with=[fedavg]"]
    first = run(None, sets, nproc=2)
    assert isinstance(first, ExperimentResult) and first.run_dir == tmp_path / "r"
    assert [p.label for p in first.plans] == ["Gossip (DFL)", "FedAvg (CFL)"]  # the main run, then compare_with
    on_disk = [json.loads((Path(p.run_dir) / "summary.json").read_text()) for p in first.plans]
    assert first.summaries == on_disk and first.summary["world_size"] == 2
    assert (first.run_dir / "comparison.png").is_file() and first.downstream is None
    second = run(None, sets, nproc=1)  # the same name again: a new folder beside it
    assert second.run_dir == tmp_path / "r-2"
    # 1 or 2 ranks: the same silos, the same arithmetic (a run's placement does not change its result)
    for key, value in _foundation(first.run_dir).items():
        assert torch.equal(value, _foundation(second.run_dir)[key]), key


def test_experiments_sharing_a_process_group_equal_each_run_alone(tmp_path):
    seeds = (0, 1)
    together = launch_together([prepare(None, [*TINY, f"seed={s}", f"output_dir={tmp_path}"], nproc=2,
                                         run_dir=tmp_path / "together" / str(s)) for s in seeds])
    for s, result in zip(seeds, together):
        finish(result)
        alone = run(None, [*TINY, f"seed={s}", f"output_dir={tmp_path}", f"name=alone{s}"], nproc=2)
        assert result.summary["foundation_accuracy"] == alone.summary["foundation_accuracy"]
        for key, value in _foundation(alone.run_dir).items():
            assert torch.equal(value, _foundation(result.run_dir)[key]), key
