"""Rows over initializations (``compare.py``), fine-tuned in a pool of two worker processes and at
the end of a ``fedsim run``: the mean ± std over fine-tune seeds and the paired Δ re-compute from
single fine-tunes.

The checks that need no process: tests/unit/downstream/."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from fedsim.downstream import (
    DownstreamConfig,
    compare_initializations,
    finetune_classification,
    finetune_segmentation,
    load_foundation_file,
    make_downstream_data,
)
from fedsim.models import ModelConfig
from tests.harness import DOWNSTREAM_MODEL, DOWNSTREAM_SIZE, REPO, foundation_state, tiny_downstream


@pytest.fixture(scope="module")
def foundation() -> dict:
    return foundation_state()


@pytest.fixture(scope="module")
def data():
    return make_downstream_data(tiny_downstream(), DOWNSTREAM_SIZE, seed=0)


def test_mean_std_and_paired_delta_recompute_from_single_runs(foundation, data):
    """A row over seeds 0 and 1 is the mean / sample std of two independent single-seed
    fine-tunes, and Δ is the mean / std of their seed-by-seed differences to random init. The
    four fine-tunes run in two spawned worker processes; the single runs here in this process
    must give the very same scores (bit for bit)."""
    ds = tiny_downstream(seeds=[0, 1], workers=2)
    rows = compare_initializations({"random": None, "fm": foundation}, DOWNSTREAM_MODEL, ds, DOWNSTREAM_SIZE, seed=0)
    single = {name: [{**finetune_segmentation(state, DOWNSTREAM_MODEL, ds, DOWNSTREAM_SIZE, s, data=data),
                      **finetune_classification(state, DOWNSTREAM_MODEL, ds, DOWNSTREAM_SIZE, s, data=data)} for s in (0, 1)]
              for name, state in (("random", None), ("fm", foundation))}
    for row in rows:
        runs = single[row["init"]]
        assert row["seeds"] == [0, 1] and [r["seed"] for r in row["per_seed"]] == [0, 1]
        for key in ("dice", "miou", "accuracy", "seg_loss"):
            vals = [r[key] for r in runs]
            assert [r[key] for r in row["per_seed"]] == vals, key
            assert row[key] == pytest.approx(statistics.fmean(vals), abs=1e-12), key
            assert row[f"{key}_std"] == pytest.approx(statistics.stdev(vals), abs=1e-12), key
    rnd, fm = rows
    assert "dice_delta" not in rnd
    diffs = [a["dice"] - b["dice"] for a, b in zip(single["fm"], single["random"])]
    assert fm["dice_delta"] == pytest.approx(statistics.fmean(diffs), abs=1e-12)
    assert fm["dice_delta_std"] == pytest.approx(statistics.stdev(diffs), abs=1e-12)
    acc = [a["accuracy"] - b["accuracy"] for a, b in zip(single["fm"], single["random"])]
    assert fm["accuracy_delta"] == pytest.approx(statistics.fmean(acc), abs=1e-12)
    # one seed: a mean but no spread (not a fake 0)
    one = compare_initializations({"random": None}, DOWNSTREAM_MODEL, tiny_downstream(tasks=["classification"]), DOWNSTREAM_SIZE, seed=0)[0]
    assert one["accuracy"] == one["per_seed"][0]["accuracy"] and math.isnan(one["accuracy_std"])


def test_default_run_table_has_seed_spread_recomputed_from_single_fine_tunes(tmp_path):
    """`fedsim run` with the downstream stage on: downstream.json holds, per initialization, one
    score per fine-tune seed equal to a fine-tune re-run here from the run's foundation.pt, their
    mean ± std, and the paired Δ to random init — and the printed table shows them."""
    import subprocess
    import sys

    sets = ["rounds=2", "train.local_steps=2", "train.batch_size=8", "data.samples_per_silo=32",
            "data.test_samples=16", "data.image_size=16", "model.width=4", "algorithm=fedavg", "compare_with=[]",
            "downstream.train_samples=8", "downstream.test_samples=8", "downstream.steps=2",
            "downstream.batch_size=4", "downstream.seg_train_samples=4", "downstream.seg_batch_size=4",
            "downstream.seg_warmup_steps=2", "downstream.seg_steps=2", "downstream.seeds=[0,1]",
            f"output_dir={tmp_path}", "name=r"]
    proc = subprocess.run([sys.executable, "-m", "fedsim", "run", "--nproc", "1", *(f"--set={s}" for s in sets)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {r["init"]: r for r in json.loads((tmp_path / "r" / "downstream.json").read_text())}
    assert len(rows) == 2 and "random" in rows
    fm_name = next(n for n in rows if n != "random")
    ds = DownstreamConfig(train_samples=8, test_samples=8, steps=2, batch_size=4, seg_train_samples=4,
                          seg_batch_size=4, seg_warmup_steps=2, seg_steps=2, seeds=[0, 1])
    data = make_downstream_data(ds, 16, seed=0)
    theta = load_foundation_file(tmp_path / "r" / "foundation.pt")
    ref = {name: [finetune_segmentation(state, ModelConfig(width=4), ds, 16, s, data=data)["dice"] for s in (0, 1)]
           for name, state in (("random", None), (fm_name, theta))}
    for name, dice in ref.items():
        assert [r["dice"] for r in rows[name]["per_seed"]] == pytest.approx(dice, abs=1e-6), name
        assert rows[name]["dice"] == pytest.approx(statistics.fmean(dice), abs=1e-6)
        assert rows[name]["dice_std"] == pytest.approx(statistics.stdev(dice), abs=1e-6)
    diffs = [a - b for a, b in zip(ref[fm_name], ref["random"])]
    assert rows[fm_name]["dice_delta"] == pytest.approx(statistics.fmean(diffs), abs=1e-6)
    out = proc.stdout
    assert "fine-tune seeds 0,1" in out and "Δ Dice" in out
    assert f"{rows[fm_name]['dice']:.3f} ± {rows[fm_name]['dice_std']:.3f}" in out
    assert f"{rows[fm_name]['dice_delta']:+.3f} ± {rows[fm_name]['dice_delta_std']:.3f}" in out
