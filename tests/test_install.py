"""A non-editable ``pip install .`` gives a ``fedsim`` command that works from any directory
(shipped topologies and the default config are package data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_pip_install_then_run_from_another_directory(tmp_path):
    # a copy of the project: building in place would leave build/ and *.egg-info in the checkout
    src = tmp_path / "src"
    shutil.copytree(REPO / "fedsim", src / "fedsim", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    venv = tmp_path / "venv"
    # the machine's torch, seen through --system-site-packages: pip must never resolve another one;
    # --without-pip so that the machine's pip and setuptools (with bdist_wheel) do the build
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", str(src)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    where = subprocess.run([str(python), "-c", "import fedsim, sys; print(fedsim.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the installed copy, not the checkout

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fedsim = str(venv / "bin" / "fedsim")
    show = subprocess.run([fedsim, "topology", "show", "gaia"], cwd=work, capture_output=True, text=True,
                          env=env, timeout=120)
    assert show.returncode == 0, show.stderr
    assert "gaia (11 silos" in show.stdout and "Virginia" in show.stdout
    run = subprocess.run([fedsim, "run", "--set", "rounds=1", "--set", "downstream.enabled=false"], cwd=work,
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    assert (work / "runs" / "default" / "summary.json").is_file()
    assert (work / "runs" / "default" / "baselines" / "fedavg" / "foundation.pt").is_file()
    assert "foundation (all-reduce)" in run.stdout
