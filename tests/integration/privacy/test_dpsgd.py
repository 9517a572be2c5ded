"""Sample-level DP (DP-SGD per silo with Opacus): per-sample clipping against hand-computed
per-sample gradients, FedEFM's distillation loss is per-sample decomposable, a run with no noise
and no clipping equals the plain run, and the ε each silo reports equals Opacus' own accountant
for the steps that read its data.

The checks that need no process: tests/unit/privacy/test_dpsgd.py."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import RDPAccountant

from tests.harness import assert_close_up_to_adam_outliers
from tests.integration.harness import run_with_plan

EFM = ["algorithm=fedefm", "topology=ring-4", "fedefm.overseas_steps=1", "fedefm.distill_steps=2"]


def test_no_noise_and_no_clipping_equals_the_plain_run(tmp_path):
    """σ = 0, C huge, the plain run's batches (sampling: shuffle): every step of FedEFM — local
    (round 0), overseas on the host's data, distillation — goes through Opacus and lands where the
    non-private step does."""
    common = EFM + ["emd.backend=uniform"]
    _, plain, _, _ = run_with_plan(tmp_path, common, 2, "plain")
    _, private, records, summary = run_with_plan(tmp_path, common + [
        "privacy.mode=sample", "privacy.noise_multiplier=0", "privacy.max_grad_norm=1e6", "privacy.delta=1e-3",
        "privacy.sampling=shuffle"], 2, "private")
    for i in plain:
        for a, b in zip(plain[i], private[i]):
            assert_close_up_to_adam_outliers(a, b)  # one stem weight of 36 on the 8-bit synthetic data
    assert all(math.isinf(r["epsilon"]) for r in records)  # no noise: no guarantee, and it says so
    assert summary["privacy"]["noise_multiplier"] == 0.0


def test_epsilon_per_silo_equals_opacus_accountant_for_the_steps_taken(tmp_path):
    from fedsim.data import load_federated

    sigma = 1.1
    overrides = EFM + ["emd.grid=2", "data.partition=quantity", "privacy.mode=sample",
                       f"privacy.noise_multiplier={sigma}", "privacy.delta=1e-3"]
    plan, _, records, summary = run_with_plan(tmp_path, overrides, 2, "eps")
    cfg = plan.cfg
    sizes = [len(ds) for ds in load_federated(cfg.data, 4, cfg.seed).train]
    assert len(set(sizes)) > 1  # silos sample at different rates
    # steps on silo i's data: round 0 its local steps; round 1 one overseas step for each of the
    # two visitors it hosts on the ring, then its distillation steps
    steps_by_round = [cfg.train.local_steps, cfg.train.local_steps + 2 * 1 + 2]
    for rec in records:
        i, k = rec["silo"], rec["round"]
        q = min(cfg.train.batch_size, sizes[i]) / sizes[i]
        acc = RDPAccountant()
        acc.history = [(sigma, q, steps_by_round[k])]
        assert rec["dp_steps"] == steps_by_round[k]
        assert rec["epsilon"] == pytest.approx(acc.get_epsilon(delta=1e-3), rel=1e-9)
        if k == 1:  # per-sample EMD weights: the record holds their batch means and the loss parts
            assert rec["teacher_weights"].keys() == rec["teacher_similarity"].keys() == {str((i - 1) % 4),
                                                                                         str((i + 1) % 4)}
            assert sum(rec["teacher_weights"].values()) == pytest.approx(1.0, abs=1e-6)
            assert rec["kd_loss"] + rec["ce_loss"] == pytest.approx(rec["loss"], abs=1e-6)
    last = {r["silo"]: r["epsilon"] for r in records if r["round"] == 1}
    assert summary["epsilon"] == max(last.values())
    assert {s["silo"]: s["epsilon"] for s in summary["silos"]} == last
    assert plan.privacy.planned_steps == {i: steps_by_round[-1] for i in range(4)}
