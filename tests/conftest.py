"""The two lanes (tests/README.md): everything under tests/integration/ is marked ``integration``;
everything else is the fast lane, ``python -m pytest -m "not integration"``, and may start no process."""

from __future__ import annotations

import multiprocessing.process
import subprocess
from pathlib import Path

import pytest
import torch

INTEGRATION = Path(__file__).resolve().parent / "integration"


def in_integration(item: pytest.Item) -> bool:
    return INTEGRATION in Path(item.path).resolve().parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if in_integration(item):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as every rank uses: on a shared 2-core machine two OpenMP threads
    thrash (10-20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ProcessStarted(RuntimeError):
    """A fast-lane test started a process."""


@pytest.fixture(autouse=True)
def started_processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Outside tests/integration/, starting a process (a rank, a pool worker, a subprocess) fails
    the test: the fast lane stays fast and a newcomer finds every process-starting test in one place.
    Yields the list of what was refused (a test of this guard clears it)."""
    refused: list[str] = []
    if in_integration(request.node):
        yield refused
        return

    def refuse(what: str) -> None:
        refused.append(what)
        raise ProcessStarted(f"{request.node.nodeid} starts {what}: a test that starts processes belongs "
                             "under tests/integration/ (tests/README.md)")

    def start(self) -> None:
        refuse(f"a process ({type(self).__name__})")

    original_popen = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        program = str(args[0] if isinstance(args, (list, tuple)) else args).split()[0]
        # ctypes.util.find_library runs ldconfig when a library (e.g. one torch loads lazily) is looked up
        if Path(program).name != "ldconfig":
            refuse(f"a subprocess ({program})")
        original_popen(self, args, *rest, **kwargs)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    yield refused
    if refused:  # also when the test caught ProcessStarted
        pytest.fail(f"{request.node.nodeid} started {', '.join(refused)}: move it under tests/integration/",
                    pytrace=False)
