"""``pyproject.toml`` declares every runtime requirement of ``requirements.txt``."""

from __future__ import annotations

import re

import pytest

from tests.harness import REPO


def _requirement_names(lines: list[str]) -> dict[str, str]:
    """{normalised project name: the requirement as written}."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9_.\-]+", line).group(0)
            out[re.sub(r"[-_.]+", "-", name).lower()] = line.replace(" ", "")
    return out


def test_pyproject_declares_every_runtime_requirement():
    """``pip install .`` must bring what ``pip install -r requirements.txt`` brings for running
    fedsim (Opacus for privacy, TensorBoard for log.tensorboard, …); only the developer tools
    (tests, lint, building) may be left to the ``dev`` extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = _requirement_names(meta["dependencies"])
    dev = _requirement_names(meta["optional-dependencies"]["dev"])
    required = _requirement_names((REPO / "requirements.txt").read_text().splitlines())
    for name, spec in required.items():
        if name in dev:
            assert dev[name] == spec, f"{name}: requirements.txt says {spec}, pyproject's dev extra {dev[name]}"
            continue
        assert name in runtime, f"requirements.txt has {spec} but pyproject.toml's dependencies do not"
        assert runtime[name] == spec, f"{name}: requirements.txt says {spec}, pyproject.toml {runtime[name]}"
    assert set(runtime) <= set(required), "a dependency of pyproject.toml is missing from requirements.txt"
