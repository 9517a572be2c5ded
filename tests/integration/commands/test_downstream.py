"""``fedsim downstream`` runs and writes its rows as JSON.

The checks that need no process: tests/unit/commands/test_downstream.py."""

from __future__ import annotations

import json

import pytest
import torch

from fedsim.cli import main
from tests.harness import DOWNSTREAM_SIZE, foundation_state


@pytest.fixture(scope="module")
def foundation() -> dict:
    return foundation_state()


def test_cli_runs_and_writes_json(tmp_path, capsys, foundation):
    path = tmp_path / "run" / "foundation.pt"
    path.parent.mkdir()
    torch.save(foundation, path)
    out = tmp_path / "rows.json"
    rc = main(["downstream", "--random", "--init", str(path), "--model-set", "width=8", "--steps", "2",
               "--train-samples", "8", "--test-samples", "4", "--batch-size", "4", "--image-size", str(DOWNSTREAM_SIZE),
               "--seg-train-samples", "4", "--seg-warmup-steps", "1", "--seg-steps", "1", "--seg-batch-size", "4",
               "--seeds", "3,5", "--domain", "phantom", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [r["init"] for r in rows] == ["random", "run"]
    assert rows[1]["encoder_tensors_loaded"] > 0 and rows[0]["domain"] == "phantom"
    assert rows[1]["seeds"] == [3, 5] and len(rows[1]["per_seed"]) == 2 and "dice_delta" in rows[1]
    text = capsys.readouterr().out
    assert "Dice" in text and "±" in text and "Δ Dice" in text
