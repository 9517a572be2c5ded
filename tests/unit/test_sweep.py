"""``fedsim sweep``: grid values keep commas inside brackets, and which earlier run folders are reused."""

from __future__ import annotations

import json

from fedsim.sweep import grid_points, split_values
from tests.harness import TINY


def test_grid_values_keep_commas_inside_brackets():
    assert split_values("a,[1, 2],{x: 1, y: 2}") == ["a", "[1, 2]", "{x: 1, y: 2}"]
    points = grid_points(["a=1,2", "b=x,y"])
    assert [p.overrides for p in points] == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"]]


def test_a_saved_config_from_before_a_new_key_still_matches():
    """A run saved before fedsim grew a key (its default keeps the old behaviour) is the same run;
    a changed value or a key that no longer exists is not."""
    import yaml

    from fedsim.config import load_config
    from fedsim.experiment import same_config

    cfg = load_config(None, ["rounds=3"])
    saved = cfg.to_dict()
    del saved["data"]["validation_fraction"], saved["log"]
    assert same_config(yaml.safe_dump(saved), cfg)
    assert not same_config(yaml.safe_dump(saved), load_config(None, ["rounds=3", "data.validation_fraction=0.1"]))
    assert not same_config(yaml.safe_dump(saved), load_config(None, ["rounds=4"]))
    saved["fedefm"]["sync_every"] = 0
    assert not same_config(yaml.safe_dump(saved), cfg)
    del saved["fedefm"]["sync_every"]
    saved["output_dir"], saved["name"] = "/elsewhere/runs", "other"  # where it lives is not what it is
    assert same_config(yaml.safe_dump(saved), cfg)
    assert not same_config("- a list", cfg)


def test_a_run_whose_downstream_predates_the_seeded_recipe_is_not_reused(tmp_path):
    """A finished run of the same config is reused only if its downstream.json holds rows from
    today's recipe (one fine-tune per seed, at the configured image size): an older file was
    measured another way."""
    from fedsim.experiment import resolve_config
    from fedsim.sweep import Point, Run, _finished

    cfg, _ = resolve_config(None, [*TINY, "compare_with=[]", "algorithm=fedavg"])
    run = Run(Point("p"), 0, cfg, tmp_path, 1)
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    (tmp_path / "summary.json").write_text("{}")
    assert cfg.downstream.enabled and not _finished(run)  # no downstream.json yet
    ds = tmp_path / "downstream.json"
    ds.write_text(json.dumps([{"init": "random", "dice": 0.7, "steps": 60, "seed": 0}]))
    assert not _finished(run)
    rows = [{"init": "random", "dice": 0.7, "dice_std": 0.01, "seeds": [0, 1],
             "per_seed": [{"seed": 0, "dice": 0.69}, {"seed": 1, "dice": 0.71}]}]
    ds.write_text(json.dumps(rows))
    assert not _finished(run)  # seeded, but on images of an unrecorded (older: the run's) size
    sizes = {"segmentation": cfg.downstream.seg_image_size, "classification": cfg.data.image_size}
    ds.write_text(json.dumps([{**rows[0], "image_sizes": sizes}]))
    assert _finished(run)
    ds.write_text(json.dumps([{**rows[0], "image_sizes": {**sizes, "segmentation": cfg.data.image_size}}]))
    assert not _finished(run)
    ds.write_text("not json")
    assert not _finished(run)
