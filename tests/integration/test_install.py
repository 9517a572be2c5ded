"""A non-editable ``pip install .`` gives a ``fedsim`` command that works from any directory
(shipped topologies and the default config are package data), and declares every dependency the
documented features import.

The checks that need no process: tests/test_install.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.harness import REPO


def test_pip_install_then_run_from_another_directory(tmp_path):
    # a copy of the project: building in place would leave build/ and *.egg-info in the checkout
    src = tmp_path / "src"
    shutil.copytree(REPO / "fedsim", src / "fedsim", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    # the wheel is built by this interpreter's own environment (setuptools from requirements.txt),
    # offline; whatever the base interpreter under a venv happens to have plays no part
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("fedsim-*.whl")
    # a new environment of its own that sees this environment's packages (torch: pip must never
    # resolve another one) after its own, so the fedsim it imports is the installed copy
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = sysconfig.get_paths()
    (Path(site) / "_outer_environment.pth").write_text(f"{here['purelib']}\n{here['platlib']}\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=300)
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
