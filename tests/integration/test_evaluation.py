"""Θ's test accuracy split into the samples inside and outside the union of the silos'
(domain, class) cells: the same predictions, recombining to the whole test set's accuracy.

The checks that need no process: tests/unit/test_evaluation.py."""

from __future__ import annotations

import json

import pytest
import torch

from tests.harness import TINY
from tests.integration.harness import run_distributed


def theta_hits(run_dir, cfg, test, num_classes: int) -> torch.Tensor:
    """Θ (foundation.pt) scored on the test set in one process: which samples it gets right."""
    from fedsim.models import build_model

    model = build_model(cfg.model, num_classes)
    model.load_state_dict(torch.load(run_dir / "foundation.pt"))
    model.eval()
    with torch.no_grad():
        return model(test.image_batch(slice(None))).argmax(1) == test.labels


def test_union_scores_are_theta_on_the_cells_every_silos_training_data_holds(tmp_path):
    """Silo 1 has ϑ = 0 and is still part of the union: at 100 % unseen labels it alone holds
    some cells, and the test samples of those cells count as in the union."""
    from fedsim.config import load_config
    from fedsim.data import carve_validation, load_federated

    overrides = ["algorithm=fedavg", "data.unseen_fraction=1.0", "data.validation_fraction=0.25",
                 "data.test_samples=48", "accumulation_status=[1, 0, 1, 1]", "name=union"]
    run_distributed(tmp_path, overrides)
    summary = json.loads((tmp_path / "union" / "summary.json").read_text())
    cfg = load_config(None, TINY + overrides)
    fd = load_federated(cfg.data, 4, cfg.seed)
    train, _ = carve_validation(fd.train, 0.25, cfg.seed)
    held = [{(d, c) for d, c in zip(ds.domain.tolist(), ds.clean_labels.tolist())} for ds in train]
    cells = set().union(*held)
    assert cells - set().union(held[0], held[2], held[3])  # silo 1's own cells: the choice is exercised
    inside = torch.tensor([(d, c) in cells for d, c in zip(fd.test.domain.tolist(), fd.test.clean_labels.tolist())])
    hits = theta_hits(tmp_path / "union", cfg, fd.test, fd.num_classes)
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    assert n_in and n_out
    assert summary["test_samples_in_union"] == n_in and summary["test_samples_out_of_union"] == n_out
    assert summary["foundation_accuracy_in_union"] == pytest.approx(int(hits[inside].sum()) / n_in, abs=1e-12)
    assert summary["foundation_accuracy_out_of_union"] == pytest.approx(int(hits[~inside].sum()) / n_out, abs=1e-12)
    whole = summary["foundation_accuracy_in_union"] * n_in + summary["foundation_accuracy_out_of_union"] * n_out
    assert summary["foundation_accuracy"] == pytest.approx(whole / (n_in + n_out), abs=1e-12)
    for key in ("foundation_accuracy_in_union", "foundation_accuracy_out_of_union"):
        assert len(summary[f"{key}_by_round"]) == cfg.rounds and summary[f"{key}_by_round"][-1] == summary[key]


def test_a_source_labelled_run_completes_with_every_test_sample_in_the_union(tmp_path):
    """``data.label: source``: the default mixtures hold all four sources, so the out-of-union
    side is empty (null) and the in-union side is the whole test set."""
    from fedsim.config import load_config
    from fedsim.data import load_federated

    overrides = ["algorithm=fedavg", "data.label=source", "data.unseen_fraction=0", "name=source"]
    run_distributed(tmp_path, overrides)
    summary = json.loads((tmp_path / "source" / "summary.json").read_text())
    cfg = load_config(None, TINY + overrides)
    fd = load_federated(cfg.data, 4, cfg.seed)
    hits = theta_hits(tmp_path / "source", cfg, fd.test, 4)  # a 4-way head: one class per source
    assert summary["foundation_accuracy"] == pytest.approx(int(hits.sum()) / len(hits), abs=1e-12)
    assert summary["foundation_accuracy_in_union"] == summary["foundation_accuracy"]
    assert summary["foundation_accuracy_out_of_union"] is None
    assert summary["test_samples_in_union"] == len(fd.test) and summary["test_samples_out_of_union"] == 0
