"""``fedsim.experiment``: bad settings are one line before anything is written, and a finished run
in its folder is not run again."""

from __future__ import annotations

import pytest

from fedsim.errors import ConfigError
from fedsim.experiment import finish, launch, prepare

TINY = ["rounds=2", "train.local_steps=2", "train.batch_size=8", "data.samples_per_silo=32",
        "data.test_samples=16", "data.image_size=16", "model.width=4", "algorithm=gossip",
        "compare_with=[]", "downstream.enabled=false", "device=cpu"]


def test_bad_settings_are_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--nproc 5"):
        prepare(None, [*TINY, f"output_dir={out}"], nproc=5)
    with pytest.raises(ConfigError, match="--max-restarts -1"):
        prepare(None, [*TINY, f"output_dir={out}"], max_restarts=-1)
    assert not out.exists()
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "config.yaml").write_text("rounds: 7\n")
    with pytest.raises(ConfigError, match="another config"):  # a folder of another run is never reused
        prepare(None, TINY, nproc=1, run_dir=folder)
    assert [p.name for p in folder.iterdir()] == ["config.yaml"]


def test_a_finished_run_in_its_folder_is_not_run_again(tmp_path):
    exp = prepare(None, [*TINY, f"output_dir={tmp_path}"], nproc=1, run_dir=tmp_path / "here")
    first = finish(launch(exp))
    stamp = (tmp_path / "here" / "summary.json").stat().st_mtime_ns
    again = finish(launch(prepare(None, [*TINY, f"output_dir={tmp_path}"], nproc=1, run_dir=tmp_path / "here")))
    assert again.summary == first.summary and (tmp_path / "here" / "summary.json").stat().st_mtime_ns == stamp
