"""``fedsim downstream``: bad input is one line and exit 2, and a plug-in named by a run folder's
config is not imported.

A run that writes its JSON: tests/integration/commands/test_downstream.py."""

from __future__ import annotations

import pytest
import torch

from fedsim.cli import main
from tests.harness import foundation_state


@pytest.fixture(scope="module")
def foundation() -> dict:
    return foundation_state()


def test_cli_bad_foundation_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "missing" / "foundation.pt"
    assert main(["downstream", "--init", f"X={missing}"]) == 2
    err = capsys.readouterr().err
    assert "foundation file not found" in err and str(missing) in err and len(err.strip().splitlines()) == 1


def test_cli_state_dict_of_another_model_exits_2(tmp_path, capsys, foundation):
    path = tmp_path / "foundation.pt"
    torch.save(foundation, path)  # width 8; the CLI default model is width 16
    assert main(["downstream", "--init", f"X={path}", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--model-set" in err


@pytest.mark.parametrize("seeds", ["a,b", ",", "1.5"])
def test_cli_bad_seeds_exit_2(capsys, seeds):
    assert main(["downstream", "--seeds", seeds]) == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and len(err.strip().splitlines()) == 1


def test_cli_does_not_import_a_plugin_named_by_a_run_folders_config(tmp_path, capsys, monkeypatch, foundation):
    # a received run folder: foundation.pt, and a config.yaml naming a module that sits beside it
    run = tmp_path / "received"
    run.mkdir()
    torch.save(foundation, run / "foundation.pt")
    marker = tmp_path / "MARKER"
    (run / "payload.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef make(**kw): pass\n")
    (run / "config.yaml").write_text("model: {name: 'received.payload:make'}\n")
    monkeypatch.chdir(tmp_path)  # where a plug-in would be imported from: received/ is importable
    assert main(["downstream", "--init", f"X={run / 'foundation.pt'}", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "received.payload:make" in err[0] and "--model-set name=" in err[0]
    assert not marker.exists()
