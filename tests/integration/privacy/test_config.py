"""Privacy settings are checked before anything trains: one clear line, exit 2.

The checks that need no process: tests/unit/privacy/test_config.py."""

from __future__ import annotations

import subprocess
import sys

TINY = ["rounds=2", "train.local_steps=2", "train.batch_size=8", "data.samples_per_silo=32",
        "data.test_samples=16", "data.image_size=16", "model.width=4", "compare_with=[]",
        "downstream.enabled=false", "emd.grid=2"]
SAMPLE = ["privacy.mode=sample", "privacy.noise_multiplier=1", "privacy.delta=1e-3"]


def test_cli_exits_2_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fedsim", "run", *[a for o in TINY + SAMPLE + ["privacy.delta=0.5"]
                                                                   for a in ("--set", o)],
                          "--set", f"output_dir={tmp_path}"], capture_output=True, text=True)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "privacy.delta 0.5" in out.stderr
    assert not any(tmp_path.iterdir())  # nothing started
