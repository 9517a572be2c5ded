"""What `fedsim run` prints and records means what its labels say; a feature whose package is
missing is one line before any rank starts."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from fedsim.commands.run import print_summary
from fedsim.config import load_config
from fedsim.errors import ConfigError


def _summary() -> dict:
    silo = {"silo": 0, "name": "a", "model": "cnn", "accuracy": 0.5, "loss": 1.25, "test_loss": 2.5,
            "bytes_sent_last_round": 3_000_000}
    return {"name": "t", "algorithm": "fedavg", "scenario": "cfl", "topology": "ring-4", "num_silos": 1,
            "world_size": 1, "rounds": 2, "round_time_s": [1.0, 1.0], "silos": [silo],
            "foundation_accuracy": 0.75, "foundation_loss": 0.875, "bytes_per_round": 1_500_000,
            "total_bytes": 3_000_000, "wall_time_s": 9.0, "attempts": 2}


def test_results_table_puts_each_loss_under_its_own_header(tmp_path, capsys):
    print_summary(_summary(), tmp_path)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "test loss" in line)
    cols = [c.strip() for c in header.split("┃")[1:-1]]
    for label in ("silo", "Θ"):
        first = "0" if label == "silo" else "Θ"
        line = next(x for x in out.splitlines() if x.startswith("│") and x.split("│")[1].strip() == first)
        cells = [c.strip() for c in line.split("│")[1:-1]]
        cell = dict(zip(cols, cells))
        if label == "silo":
            assert cell["test loss"] == "2.500" and cell["train loss (last round)"] == "1.250"
        else:  # Θ is never trained: its loss is the test loss, and it has no training loss
            assert cell["test loss"] == "0.875" and cell["train loss (last round)"] == ""
    assert "1.50 MB per round, all silos, the mean over 2 round(s)" in out
    assert "over 2 attempts" in out


def test_folder_silos_are_named_by_their_folders(tmp_path):
    from fedsim.plan import build_plan
    from fedsim.summary import silo_display_names

    root = tmp_path / "data"
    for silo in ("zurich", "basel", "bern", "geneva"):
        (root / silo / "images").mkdir(parents=True)
        for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
            Image.fromarray(np.full((16, 16), 90, dtype=np.uint8)).save(root / silo / "images" / name)
        (root / silo / "labels.csv").write_text("file,label\na.png,0\nb.png,1\nc.png,0\nd.png,1\ne.png,0\n")
    base = ["data.kind=folder", f"data.root={root}", "data.image_size=16", "algorithm=fedavg", "compare_with=[]",
            "downstream.enabled=false", "model.width=4"]
    plan = build_plan(load_config(None, base), tmp_path / "run", 1)
    assert silo_display_names(plan) == ["basel", "bern", "geneva", "zurich"]  # silo i = i-th folder by name
    named = tmp_path / "named.yaml"
    named.write_text("silos: [{name: A}, {name: B}, {name: C}, {name: D}]\nedges: [[0, 1], [1, 2], [2, 3], [3, 0]]\n")
    plan = build_plan(load_config(None, [*base, f"topology={named}"]), tmp_path / "run", 1)
    assert silo_display_names(plan) == ["A (basel)", "B (bern)", "C (geneva)", "D (zurich)"]
    iid = build_plan(load_config(None, [*base, "data.partition=iid"]), tmp_path / "run", 1)
    assert silo_display_names(iid) == ["0", "1", "2", "3"]  # re-split: no folder is a silo


@pytest.mark.parametrize("module, overrides", [
    ("opacus", ["privacy.mode=sample", "privacy.noise_multiplier=1.0", "algorithm=fedavg"]),
    ("tensorboard", ["log.tensorboard=true"]),
])
def test_a_feature_whose_package_is_missing_is_one_line(monkeypatch, module, overrides):
    load_config(None, overrides)  # installed here: fine
    monkeypatch.setitem(sys.modules, module, None)  # what an install without it looks like to import
    with pytest.raises(ConfigError, match=f"needs the Python package '{module}'.*pip install"):
        load_config(None, overrides)
