"""Real crashes: a rank killed with SIGKILL from outside, a rank that stalls, a rank that keeps
crashing, a checkpoint damaged on disk. The run restarts by itself (``--max-restarts``,
``torchrun --max-restarts``), continues from its last good checkpoint and ends with the weights
of an uninterrupted run; with ``faults.on_crash: exclude`` it finishes without the lost silos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.harness import CLI_TINY, REPO, sets
from tests.integration.harness import fedsim

# gossip, 4 silos on 2 ranks; 3 of the 4 silos drawn each round, so the draw after a restart is
# checked too; a short timeout so a lost peer is noticed quickly
JOB = CLI_TINY + ["rounds=6", "faults.participation=0.75", "timeout_s=20"]


def foundation(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "foundation.pt")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run every recovery is compared with."""
    out = tmp_path_factory.mktemp("straight")
    done = fedsim("run", "--nproc", "2", "--quiet", *sets(JOB + [f"output_dir={out}", "name=s"]))
    assert done.returncode == 0, done.stderr
    return out / "s"


def _rank_pids(parent: int) -> list[int]:
    """The rank processes a ``fedsim run`` process started, in start order: children spawned by
    multiprocessing (``spawn_main``) or forked from it (the same command line), not its helpers
    (multiprocessing's resource tracker)."""
    own = (Path("/proc") / str(parent) / "cmdline").read_bytes()
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and (b"spawn_main" in cmd or cmd == own):
            pids.append(int(stat.parent.name))
    return sorted(pids)


def _rounds_done(run_dir: Path, silo: int) -> int:
    path = run_dir / "metrics" / f"silo_{silo}.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_a_rank_killed_from_outside_restarts_and_ends_with_the_uninterrupted_weights(tmp_path, straight):
    run_dir = tmp_path / "k"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim", "run", "--nproc", "2", "--quiet", "--max-restarts", "1",
         *sets(JOB + [f"output_dir={tmp_path}", "name=k"])],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        if _rounds_done(run_dir, 2) >= 2:  # rounds 0 and 1 are done: kill rank 1 (silos 2, 3) now
            ranks = _rank_pids(proc.pid)
            if ranks:  # the last rank started is rank 1 (rank 0 may be the launching process itself)
                os.kill(ranks[-1], signal.SIGKILL)
                killed = ranks[-1]
        time.sleep(0.01)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, "the run ended before it could be killed"
    assert proc.returncode == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("fedsim:")]
    assert len(lines) == 1 and "SIGKILL" in lines[0] and "continuing from round" in lines[0], err
    assert_same_weights(foundation(run_dir), foundation(straight))
    assert [json.loads(x)["round"] for x in (run_dir / "metrics" / "silo_2.jsonl").read_text().splitlines()] == \
        list(range(6))
    a = json.loads((run_dir / "summary.json").read_text())["participation"]["participants_by_round"]
    assert a == json.loads((straight / "summary.json").read_text())["participation"]["participants_by_round"]


def test_a_stalled_rank_is_detected_within_the_timeout_and_restarted(tmp_path, straight):
    env = dict(os.environ, FEDSIM_FAULT="stall:1:2:1")  # rank 1 hangs in round 2 of the first attempt only
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "fedsim", "run", "--nproc", "2", "--quiet", "--max-restarts", "1",
         *sets(JOB + [f"output_dir={tmp_path}", "name=st", "timeout_s=5"])],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("fedsim:")]
    assert len(lines) == 1 and "rank(s) 1 (silo(s) 2, 3) failed in round 2" in lines[0], out.stderr
    assert time.monotonic() - started < 300  # never a hang
    assert_same_weights(foundation(tmp_path / "st"), foundation(straight))


def test_a_rank_that_keeps_crashing_is_excluded_and_the_others_finish(tmp_path):
    # rank 1 SIGKILLs itself in round 2 of every attempt: one restart is allowed, then its silos
    # (2 and 3) are left out from round 2 on and the run finishes on the remaining rank
    job = CLI_TINY + ["rounds=4", "timeout_s=20", f"output_dir={tmp_path}"]
    env = dict(os.environ, FEDSIM_FAULT="kill:1:2")
    out = subprocess.run(
        [sys.executable, "-m", "fedsim", "run", "--nproc", "2", "--max-restarts", "1",
         *sets(job + ["name=x", "faults.on_crash=exclude"])],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("fedsim:")]
    assert len(lines) == 2 and "restart 1 of 1" in lines[0], out.stderr
    assert "silo(s) 2, 3 crashed 2 time(s)" in lines[1] and "excluded (ϑ = 0) from round 2 on" in lines[1]
    assert "silo 2 (2) crashed 2 time(s) on rank 1 and was excluded from round 2" in out.stdout
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    lost = summary["participation"]["failed_silos"]
    assert [(e["silo"], e["round"], e["reason"]) for e in lost] == [(2, 2, "crashed"), (3, 2, "crashed")]
    assert summary["participation"]["participants_by_round"] == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1], [0, 1]]
    # the same as a run in which silos 2 and 3 drop out for good in round 2 (ϑ = 0 from then on)
    ref = fedsim("run", "--nproc", "2", "--quiet",
                 *sets(job + ["name=ref", "faults.dropout=[{silo: 2, start: 2}, {silo: 3, start: 2}]"]))
    assert ref.returncode == 0, ref.stderr
    assert_same_weights(foundation(tmp_path / "x"), foundation(tmp_path / "ref"))


def test_a_truncated_checkpoint_resumes_from_the_round_before(tmp_path, straight):
    first = fedsim("run", "--nproc", "2", "--quiet", *sets(JOB + ["rounds=5", f"output_dir={tmp_path}", "name=t"]))
    assert first.returncode == 0, first.stderr
    ck = tmp_path / "t" / "checkpoints"
    assert sorted(p.name for p in ck.glob("round_*")) == ["round_3", "round_4"]  # the last two rounds are kept
    damaged = ck / "round_4" / "rank_1.pt"  # one file per rank, with every silo the rank hosts
    damaged.write_bytes(damaged.read_bytes()[:100])
    again = fedsim("run", "--nproc", "2", "--quiet", "--resume", *sets(JOB + [f"output_dir={tmp_path}", "name=t"]))
    assert again.returncode == 0, again.stderr
    warnings = [ln for ln in again.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and str(damaged) in warnings[0] and "truncated" in warnings[0], again.stderr
    assert "resuming from round 3" in warnings[0]
    assert_same_weights(foundation(tmp_path / "t"), foundation(straight))


def test_torchrun_max_restarts_continues_from_the_checkpoint(tmp_path, straight):
    import shutil

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = dict(os.environ, OMP_NUM_THREADS="1", FEDSIM_FAULT="kill:1:3:1")  # first attempt only
    out = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "--max-restarts=1", "-m", "fedsim", "run", "--quiet",
         *sets(JOB + [f"output_dir={tmp_path}", "name=tr"])],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "tr-2").exists()  # the restart continued in the same folder
    assert_same_weights(foundation(tmp_path / "tr"), foundation(straight))
