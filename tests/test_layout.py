"""The test tree a newcomer navigates (tests/README.md): tests/unit/ and tests/integration/ mirror
fedsim/, and a test outside tests/integration/ cannot start a process."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest

from tests.conftest import ProcessStarted
from tests.harness import REPO

TESTS = REPO / "tests"


def test_a_fast_lane_test_cannot_start_a_process(started_processes):
    with pytest.raises(ProcessStarted, match="belongs under tests/integration/"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(ProcessStarted, match="belongs under tests/integration/"):
        multiprocessing.get_context("spawn").Process(target=print).start()
    assert len(started_processes) == 2
    started_processes.clear()  # refused as it should be: not a failure of this test


@pytest.mark.parametrize("lane", ["unit", "integration"])
def test_every_folder_of_a_lane_mirrors_a_package(lane):
    """tests/<lane>/a/b/ holds the tests of fedsim/a/b/ (benchmarks/: of benchmarks/)."""
    for folder in sorted(p for p in (TESTS / lane).rglob("*") if p.is_dir() and p.name != "__pycache__"):
        rel = folder.relative_to(TESTS / lane)
        mirror = REPO / rel if rel.parts[0] == "benchmarks" else REPO / "fedsim" / rel
        assert mirror.is_dir(), f"tests/{lane}/{rel}/ mirrors nothing: fedsim/{rel}/ does not exist"
        assert (folder / "__init__.py").exists(), f"tests/{lane}/{rel}/ needs an __init__.py (same names in both lanes)"


def test_test_files_live_in_a_lane():
    """Only the checks of the repository as a whole sit beside the lanes."""
    loose = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert loose == ["test_docs.py", "test_install.py", "test_layering.py", "test_layout.py"], loose
