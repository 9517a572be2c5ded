"""What the layers buy, checked in a fresh interpreter: loading a config imports neither torch nor an
algorithm, and the command line starts without torch (docs/architecture.md, "Layers").

The static checks of the module graph: tests/test_layering.py."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO

PACKAGE = REPO / "fedsim"


def test_loading_a_config_imports_neither_torch_nor_an_algorithm():
    code = ("import sys\n"
            "from fedsim.config import load_config\n"
            "load_config(None, ['rounds=2', 'algorithm=fedefm', 'compare_with=[fedavg, feddf]'])\n"
            "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith('fedsim.algorithms.')\n"
            "               and m != 'fedsim.algorithms.settings')\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_cli_starts_without_torch():
    """What DEFERRED_BY_DESIGN buys: importing the command line and loading a config import no torch."""
    code = "import sys, fedsim.cli; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
