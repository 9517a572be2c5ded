"""Checkpoints are read as data only: a file that would run code when unpickled, or that holds a
class that is not data, is refused in one line with nothing run; plain data loads as it was saved."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from fedsim.checkpoint import load_data_file
from fedsim.errors import UnreadableFileError, UnsafeFileError


class RunsCode:
    """Unpickling this calls ``os.system``: what a hostile checkpoint holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Payload:
    """An ordinary class that is not data: refused too (loading it would import its module)."""

    def __init__(self) -> None:
        self.value = 1


SYSTEM = f"{os.system.__module__}.{os.system.__name__}"  # posix.system: what the pickle names


def test_a_file_holding_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "algorithm": RunsCode(marker)}, path)
    with pytest.raises(UnsafeFileError) as err:
        load_data_file(path)
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and str(path) in message and SYSTEM in message

    other = tmp_path / "class.pt"
    torch.save({"w": torch.ones(1), "extra": Payload()}, other)
    with pytest.raises(UnsafeFileError, match=re.escape(f"{Payload.__module__}.Payload")):
        load_data_file(other)

    # the same call reached through instructions torch never writes: a newer pickle protocol
    # (STACK_GLOBAL) in a torch file, an old one (INST) in a bare pickle — refused as well
    newer = tmp_path / "protocol4.pt"
    torch.save({"w": torch.ones(1), "x": RunsCode(marker)}, newer, pickle_protocol=4)
    older = tmp_path / "inst.pt"
    older.write_bytes(f"(S'touch {marker}'\nios\nsystem\n.".encode())
    for path in (newer, older):
        with pytest.raises(UnreadableFileError, match="refused to load") as err:
            load_data_file(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


def test_plain_data_loads_as_it_was_saved(tmp_path):
    state = {"round": 3, "silos": {0: {"model": {"w": torch.arange(4.0)}, "pos": 5, "name": "x",
                                       "history": [(1.0, 0.25, 3)], "rx": {(0, 1): [torch.ones(2)]}}}}
    path = tmp_path / "ok.pt"
    torch.save(state, path)
    got = load_data_file(path)
    assert got["silos"][0]["history"] == [(1.0, 0.25, 3)] and got["silos"][0]["pos"] == 5
    assert torch.equal(got["silos"][0]["rx"][(0, 1)][0], torch.ones(2))
