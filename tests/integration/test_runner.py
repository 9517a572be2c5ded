"""The runner's foundation model Θ honours the accumulation status ϑ.

The checks that need no process: tests/unit/test_runner.py."""

from __future__ import annotations

import pytest
import torch

from tests.harness import TINY
from tests.integration.harness import run_distributed


def test_a_silo_with_status_zero_does_not_contribute_to_the_foundation(tmp_path):
    overrides = ["algorithm=fedefm", "rounds=2", "fedefm.overseas_steps=1", "fedefm.distill_steps=1",
                 "emd.grid=2", "accumulation_status=[1, 0, 1, 1]", "name=theta"]
    silos = run_distributed(tmp_path, overrides)
    foundation = list(torch.load(tmp_path / "theta" / "foundation.pt").values())
    for k, theta in enumerate(foundation):
        if not theta.is_floating_point():
            continue
        kept = torch.stack([silos[i][k].double() for i in (0, 2, 3)]).mean(0).to(theta.dtype)
        every = torch.stack([silos[i][k].double() for i in range(4)]).mean(0).to(theta.dtype)
        assert torch.equal(theta, kept)
        if k == 0:
            assert not torch.equal(theta, every)  # silo 1 really is different and left out


def test_foundation_validation_accuracy_is_theta_on_every_silos_split(tmp_path):
    """Each rank scores its own silos' splits; the all-reduced score (and loss) equals Θ scored in
    one process on the union of the splits."""
    import json

    from fedsim.config import load_config
    from fedsim.data import SiloDataset, carve_validation, load_federated
    from fedsim.evaluation import evaluate
    from fedsim.models import build_model


    overrides = ["algorithm=fedavg", "data.validation_fraction=0.25", "name=val"]
    run_distributed(tmp_path, overrides)
    summary = json.loads((tmp_path / "val" / "summary.json").read_text())
    cfg = load_config(None, TINY + overrides)
    _, val = carve_validation(load_federated(cfg.data, 4, cfg.seed).train, 0.25, cfg.seed)
    model = build_model(cfg.model, 6)
    model.load_state_dict(torch.load(tmp_path / "val" / "foundation.pt"))
    want_loss, want = evaluate(model, SiloDataset.concat(val), torch.device("cpu"))
    assert summary["foundation_val_accuracy"] == pytest.approx(want, abs=1e-12)
    assert summary["foundation_val_loss"] == pytest.approx(want_loss, rel=1e-6)
    assert summary["foundation_val_accuracy_by_round"][-1] == pytest.approx(want, abs=1e-12)


def test_each_silos_validation_accuracy_is_its_model_on_its_own_split(tmp_path):
    """Models that are never averaged (MDH-FL, standalone) are chosen on each silo's score on its
    own held-out part: the summary's per-silo val_accuracy is the silo's last model scored in one
    process on that split, mean_silo_val_accuracy their mean."""
    import json

    from fedsim.config import load_config
    from fedsim.data import carve_validation, load_federated
    from fedsim.evaluation import evaluate
    from fedsim.models import build_model


    overrides = ["algorithm=mdhfl", "scenario=cfl", "mdhfl.align_steps=2", "mdhfl.public_samples=16",
                 "data.validation_fraction=0.25", "name=silo_val"]
    silos = run_distributed(tmp_path, overrides)
    summary = json.loads((tmp_path / "silo_val" / "summary.json").read_text())
    cfg = load_config(None, TINY + overrides)
    _, val = carve_validation(load_federated(cfg.data, 4, cfg.seed).train, 0.25, cfg.seed)
    want = []
    for i in range(4):
        model = build_model(cfg.model, 6)
        model.load_state_dict(dict(zip(model.state_dict(), silos[i])))
        want.append(evaluate(model, val[i], torch.device("cpu"))[1])
    got = {s["silo"]: s["val_accuracy"] for s in summary["silos"]}
    assert [got[i] for i in range(4)] == pytest.approx(want, abs=1e-12)
    assert summary["mean_silo_val_accuracy"] == pytest.approx(sum(want) / 4, abs=1e-12)
    assert summary["val_accuracy_by_round"][-1] == summary["mean_silo_val_accuracy"]
    assert "foundation_val_accuracy" not in summary  # no Θ


def test_gradient_steps_count_each_silos_own_and_hosted_work(tmp_path):
    """FedEFM on a ring: round 0 trains locally; later rounds host two visitors and distil."""
    import json

    overrides = ["algorithm=fedefm", "fedefm.overseas_steps=3", "fedefm.distill_steps=5", "emd.grid=2",
                 "train.local_steps=2", "name=steps"]
    run_distributed(tmp_path, overrides)
    for i in range(4):
        rows = [json.loads(line) for line in (tmp_path / "steps" / "metrics" / f"silo_{i}.jsonl").read_text().splitlines()]
        assert [r["grad_steps"] for r in rows] == [2, 2 * 3 + 5]
