"""Checkpoints are read as data only: every algorithm, privacy mode and codec saves state that a
``weights_only`` load restores exactly, and a file that would run code when unpickled — in a
checkpoint with a matching manifest, an ``init_from`` file or a foundation given to ``fedsim
downstream`` — is refused in one line (exit 2) with nothing run and nothing written.

The checks that need no process: tests/unit/test_checkpoint.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from fedsim.checkpoint import load_silo_states
from tests.harness import CLI_TINY, assert_same_state, sets
from tests.integration.harness import fedsim


class RunsCode:
    """Unpickling this calls ``os.system``: what a hostile checkpoint holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


SYSTEM = f"{os.system.__module__}.{os.system.__name__}"  # posix.system: what the pickle names


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _plant(path: Path, payload) -> None:
    """Put ``payload`` into one silo's state of checkpoint file ``path`` and update the round's
    manifest (size, SHA-256) as a hand that writes both would."""
    state = torch.load(path, weights_only=True)
    silo = next(iter(state["silos"]))
    state["silos"][silo]["algorithm"] = {"previous": payload}
    torch.save(state, path)
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][path.name].update(bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    manifest_path.write_text(json.dumps(manifest))


def test_resume_from_a_checkpoint_that_would_run_code_is_refused_and_changes_nothing(tmp_path):
    job = CLI_TINY + ["train.local_steps=1", f"output_dir={tmp_path}", "name=r"]
    first = fedsim("run", "--nproc", "2", "--quiet", *sets(job))
    assert first.returncode == 0, first.stderr
    run = tmp_path / "r"
    marker = tmp_path / "MARKER"
    # the newest round is planted (its manifest matches): refused, not passed over for round 0
    evil = run / "checkpoints" / "round_1" / "rank_1.pt"
    _plant(evil, RunsCode(marker))
    before = _snapshot(run)
    again = fedsim("run", "--nproc", "2", "--quiet", "--resume", *sets(job + ["rounds=3"]))
    assert again.returncode == 2, again.stderr
    lines = [ln for ln in again.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(evil) in lines[0] and SYSTEM in lines[0] and "refused" in lines[0], again.stderr
    assert not marker.exists()
    assert _snapshot(run) == before


def test_an_init_from_file_or_a_downstream_foundation_holding_code_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "foundation.pt"
    torch.save({"stem.weight": torch.zeros(1), "head": RunsCode(marker)}, evil)
    run = fedsim("run", "--nproc", "2", "--quiet", *sets(CLI_TINY + [f"output_dir={tmp_path}", "name=i", f"init_from={evil}"]))
    down = fedsim("downstream", "--init", f"x={evil}", "--steps", "1", "--seeds", "0")
    for out in (run, down):
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert out.returncode == 2 and len(lines) == 1 and str(evil) in lines[0] and SYSTEM in lines[0], out.stderr
    assert not marker.exists() and not (tmp_path / "i").exists()


# Every state fedsim saves is restored through the weights_only load above by the resume tests:
# gossip and MOON's previous models (test_cli.py), FedMD's and MDHFL's public-set optimisers
# (tests/integration/algorithms/), DP-SGD's Poisson stream and RDP accountant with top-k on the CFL server
# path (tests/integration/privacy/test_resume.py), a crash restart (test_crashes.py). These two add what no
# other resume test saves: client-level DP's round counts with the server's residuals and Θ̂, and
# the links' coded references of a decentralised run with SGD.
CASES = {
    "client-dp-topk": ["algorithm=fedavg", "privacy.mode=client", "privacy.noise_multiplier=1.0", "privacy.delta=0.1",
                       "compression.kind=topk", "compression.ratio=0.2", "compression.error_feedback=true"],
    "int8-links-sgd": ["algorithm=fedefm", "emd.backend=uniform", "fedefm.overseas_steps=1", "fedefm.distill_steps=1",
                       "compression.kind=int8", "compression.error_feedback=true", "train.optimizer=sgd"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_resume_restores_every_state_as_data_and_continues_exactly(tmp_path, case):
    job = CLI_TINY + ["train.local_steps=1", "train.eval_every=0", f"output_dir={tmp_path}", *CASES[case]]
    for args in (["name=a", "rounds=2"], ["name=b", "rounds=1"], ["name=b", "rounds=2", "--resume"]):
        out = fedsim("run", "--nproc", "2", "--quiet", *[a for a in args if a.startswith("--")],
                     *sets(job + [a for a in args if not a.startswith("--")]))
        assert out.returncode == 0, out.stderr
    straight, resumed = (load_silo_states(tmp_path / n / "checkpoints" / "round_1") for n in ("a", "b"))
    assert sorted(straight) == sorted(resumed) == [0, 1, 2, 3]
    for i in straight:  # models, optimisers, streams, accountants, coded references: all the same
        assert_same_state(straight[i], resumed[i], f"silo {i}")
    saved = resumed[0]["federation"]  # the case did save coded state: the links' or the server's
    assert saved["links"]["rx"] or saved["server_coder"]["up"]
