"""Rows over initializations (``compare.py``): deterministic, and fair (every row the same data,
seeds and decoder/head initialisation).

The mean ± std and the paired Δ recomputed from single fine-tunes: tests/integration/downstream/test_compare.py."""

from __future__ import annotations

import math

from fedsim.downstream import (
    compare_initializations,
    downstream_table,
)
from tests.harness import DOWNSTREAM_MODEL, DOWNSTREAM_SIZE, tiny_downstream


def test_compare_is_deterministic_and_fair(foundation):
    inits = {"random": None, "fm": foundation}
    ds = tiny_downstream()
    a = compare_initializations(inits, DOWNSTREAM_MODEL, ds, DOWNSTREAM_SIZE, seed=0)
    b = compare_initializations(inits, DOWNSTREAM_MODEL, ds, DOWNSTREAM_SIZE, seed=0)
    keys = ["dice", "dice_catheter", "dice_guidewire", "miou", "jaccard", "accuracy", "seg_loss", "cls_loss"]
    for ra, rb in zip(a, b):
        for k in keys:
            assert (math.isnan(ra[k]) and math.isnan(rb[k])) or ra[k] == rb[k], k
    assert [r["init"] for r in a] == ["random", "fm"]
    assert a[0]["encoder_tensors_loaded"] == 0 and a[1]["encoder_tensors_loaded"] > 0
    assert a[1]["backbone_tensors_loaded"] == a[1]["encoder_tensors_loaded"]
    # the init is the only difference between rows, and it does change the outcome
    assert a[0]["seg_loss"] != a[1]["seg_loss"]
    for r in a:
        assert 0.0 <= r["accuracy"] <= 1.0
        for k in ("dice", "miou", "jaccard"):
            assert math.isnan(r[k]) or 0.0 <= r[k] <= 1.0
    table = downstream_table(a)
    assert table.row_count == 2
