"""The robust rules of ``aggregation:`` against independent computations written here from their
definitions (numpy on the stacked inputs; Krum from Blanchard et al. 2017), and the checks that
refuse a rule that cannot serve the run before any rank starts.

The checks that need no process: tests/unit/test_aggregation.py."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fedsim", "run", "--quiet", "--set", "algorithm=fedavg",
                          "--set", "aggregation=krum", "--set", f"output_dir={tmp_path}"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "needs more than 2·1 + 2 = 4 inputs" in out.stderr and not any(tmp_path.iterdir())
