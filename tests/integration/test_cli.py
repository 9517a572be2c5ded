"""The command line as a user meets it: results on disk, resume, and one-line errors with exit 2.

The checks that need no process: tests/unit/test_cli.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.harness import CLI_TINY, REPO, sets
from tests.integration.harness import fedsim


def test_run_writes_results_and_resume_continues_exactly(tmp_path):
    straight = fedsim("run", "--nproc", "2", *sets(CLI_TINY + ["rounds=3", f"output_dir={tmp_path}", "name=a"]))
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "a"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["num_silos"] == 4 and summary["world_size"] == 2
    lines = [json.loads(x) for x in (run / "metrics" / "silo_2.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [0, 1, 2]
    ring_neighbours = {"1", "3"}
    assert set(lines[0]["bytes_by_dst"]) == ring_neighbours
    assert lines[0]["bytes_sent"] == sum(lines[0]["bytes_by_dst"].values()) > 0
    assert all(r["sim_time_ms"] > 0 for r in lines) and lines[2]["sim_time_ms"] > lines[1]["sim_time_ms"]
    assert (run / "config.yaml").is_file() and (run / "summary.csv").is_file()
    assert "test accuracy" in straight.stdout

    first = fedsim("run", "--nproc", "2", *sets(CLI_TINY + ["rounds=2", f"output_dir={tmp_path}", "name=b"]))
    assert first.returncode == 0, first.stderr
    again = fedsim("run", "--nproc", "1", "--resume", *sets(CLI_TINY + ["rounds=3", f"output_dir={tmp_path}", "name=b"]))
    assert again.returncode == 0, again.stderr
    a = torch.load(run / "foundation.pt")
    b = torch.load(tmp_path / "b" / "foundation.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed = [json.loads(x)["round"] for x in (tmp_path / "b" / "metrics" / "silo_2.jsonl").read_text().splitlines()]
    assert resumed == [0, 1, 2]
    resumed_summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert resumed_summary["total_bytes"] == summary["total_bytes"]
    assert resumed_summary["accuracy_by_round"] == summary["accuracy_by_round"]

    # a second run of the same name never overwrites the first
    third = fedsim("run", "--nproc", "2", "--quiet", *sets(CLI_TINY + [f"output_dir={tmp_path}", "name=a"]))
    assert third.returncode == 0 and (tmp_path / "a-2" / "summary.json").is_file()
    assert json.loads((run / "summary.json").read_text())["rounds"] == 3


def test_moon_resume_restores_each_silos_previous_model(tmp_path):
    # MOON's loss reads each silo's previous-round model: --resume must bring it back, or the
    # resumed round would contrast against the global model instead
    moon = CLI_TINY + ["algorithm=moon", "moon.mu=5", f"output_dir={tmp_path}"]
    straight = fedsim("run", "--nproc", "2", "--quiet", *sets(moon + ["rounds=3", "name=a"]))
    first = fedsim("run", "--nproc", "2", "--quiet", *sets(moon + ["rounds=2", "name=b"]))
    again = fedsim("run", "--nproc", "1", "--quiet", "--resume", *sets(moon + ["rounds=3", "name=b"]))
    assert straight.returncode == first.returncode == again.returncode == 0, again.stderr
    a = torch.load(tmp_path / "a" / "foundation.pt")
    b = torch.load(tmp_path / "b" / "foundation.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_six_silos_on_two_ranks(tmp_path):
    out = fedsim("run", str(REPO / "launch" / "configs" / "gossip_ring6.yaml"), "--nproc", "2", "--quiet",
                 *sets(CLI_TINY + [f"output_dir={tmp_path}", "name=six"]))
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "six" / "summary.json").read_text())
    assert summary["num_silos"] == 6 and summary["world_size"] == 2


def test_run_help_names_the_privacy_and_compression_keys():
    text = " ".join(fedsim("run", "--help").stdout.split())  # argparse wraps lines
    for key in ("privacy.mode: none | sample | client", "privacy.noise_multiplier", "privacy.max_grad_norm",
                "privacy.delta", "privacy.target_epsilon", "compression.kind: none | fp16 | bf16 | int8 | topk",
                "compression.ratio", "compression.error_feedback"):
        assert key in text, key


@pytest.mark.parametrize("fault", ["stall", "die"])
def test_a_lost_silo_is_reported_not_a_hang(tmp_path, fault):
    import os

    env = dict(os.environ, FEDSIM_FAULT=f"{fault}:1:2")
    out = subprocess.run(
        [sys.executable, "-m", "fedsim", "run", "--nproc", "2",
         *sets(CLI_TINY + ["rounds=4", "timeout_s=5", f"output_dir={tmp_path}", "name=f"])],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("fedsim: error: silo(s) 2, 3 failed or stalled") and "--resume" in err
    assert "--max-restarts" in err  # the way to have it continue by itself
    assert "rounds 0..1 are checkpointed" in err
    assert json.loads((tmp_path / "f" / "checkpoints" / "latest.json").read_text())["round"] == 1
    # the run continues from its checkpoint once the silos are back
    again = fedsim("run", "--nproc", "2", "--resume", "--quiet",
                   *sets(CLI_TINY + ["rounds=4", f"output_dir={tmp_path}", "name=f"]))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "f" / "summary.json").read_text())["rounds"] == 4


def test_torchrun_and_spawn_give_the_same_foundation(tmp_path):
    import os
    import shutil

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    common = sets(CLI_TINY + [f"output_dir={tmp_path}"])
    joined = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "fedsim", "run", "--quiet", *common,
         "--set=name=tr"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert joined.returncode == 0, joined.stderr[-2000:]
    spawned = fedsim("run", "--nproc", "2", "--quiet", *common, "--set=name=sp")
    assert spawned.returncode == 0, spawned.stderr
    assert json.loads((tmp_path / "tr" / "summary.json").read_text())["world_size"] == 2
    a, b = torch.load(tmp_path / "tr" / "foundation.pt"), torch.load(tmp_path / "sp" / "foundation.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_changed_config_and_records_what_may_change(tmp_path):
    """--resume compares the config with the run's config.yaml: a key that changes results is one
    line and exit 2 with nothing written; a result-neutral one (timeout_s) is recorded; a finished
    run is never rewritten; wall_time_s covers every attempt."""
    import os

    base = CLI_TINY + ["rounds=3", f"output_dir={tmp_path}"]
    done = fedsim("run", "--nproc", "1", "--quiet", *sets(base + ["name=whole"]))
    assert done.returncode == 0, done.stderr
    whole = tmp_path / "whole"

    def snapshot(run: Path) -> dict:
        return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}

    before = snapshot(whole)
    for change in ("train.lr=0.01", "timeout_s=100"):  # a finished run: the first refused, neither rewrites
        again = fedsim("run", "--nproc", "1", "--quiet", "--resume", *sets(base + ["name=whole", change]))
        assert again.returncode == (2 if change.startswith("train") else 0), again.stderr
        assert snapshot(whole) == before
    err = fedsim("run", "--resume", *sets(base + ["name=whole", "train.lr=0.01"])).stderr.strip()
    assert len(err.splitlines()) == 1 and "train.lr" in err and "0.001" in err and "0.01" in err

    # a run whose only rank dies in round 2 (rounds 0 and 1 checkpointed)
    env = {**os.environ, "FEDSIM_FAULT": "die:0:2"}
    cut = subprocess.run([sys.executable, "-m", "fedsim", "run", "--nproc", "1", "--quiet", *sets(base + ["name=cut"])],
                         cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert cut.returncode != 0
    run = tmp_path / "cut"
    before = snapshot(run)
    refused = fedsim("run", "--nproc", "1", "--quiet", "--resume", *sets(base + ["name=cut", "train.lr=0.01"]))
    assert refused.returncode == 2 and "train.lr" in refused.stderr
    assert snapshot(run) == before  # nothing written
    resumed = fedsim("run", "--nproc", "1", "--quiet", "--resume", *sets(base + ["name=cut", "timeout_s=100"]))
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(whole / "foundation.pt"), torch.load(run / "foundation.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run, continued
    assert "timeout_s: 100" in (run / "config.yaml").read_text()
    attempts = json.loads((run / "checkpoints" / "attempts.json").read_text())
    assert [x["start_round"] for x in attempts] == [0, 2]
    assert attempts[1]["config_changes"] == {"timeout_s": [300.0, 100.0]}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["attempts"] == 2 and len(summary["wall_time_s_by_attempt"]) == 2
    assert min(summary["wall_time_s_by_attempt"]) > 0
    assert summary["wall_time_s"] == pytest.approx(sum(summary["wall_time_s_by_attempt"]))
    walls = [json.loads(x)["wall_time_s"] for x in (run / "metrics" / "silo_0.jsonl").read_text().splitlines()]
    assert walls == sorted(walls) and walls[2] > summary["wall_time_s_by_attempt"][0]  # counted on from attempt 1


def test_checkpoint_every_resumes_bit_identically_after_10_and_after_20_rounds(tmp_path):
    """checkpoint.every 10 saves after rounds 9, 19 and the last (24): a run that dies in round 15
    resumes from round 9's checkpoint, dies again in round 24 and resumes from round 19's, and ends
    with the weights and records of an uninterrupted run (the AdamW moments and the sqrt schedule's
    step count come back too); the records a crash left after the checkpoint are run again once."""
    import os

    base = CLI_TINY + ["rounds=25", "checkpoint.every=10", "train.optimizer=adamw", "train.lr_schedule=sqrt",
                   "net.compute_ms=1", f"output_dir={tmp_path}"]
    whole = fedsim("run", "--nproc", "1", "--quiet", *sets(base + ["name=whole"]))
    assert whole.returncode == 0, whole.stderr
    assert sorted(p.name for p in (tmp_path / "whole" / "checkpoints").glob("round_*")) == ["round_19", "round_24"]

    run = tmp_path / "cut"
    for die, last in (("die:0:15", 9), ("die:0:24", 19)):
        again = ["--resume"] if last == 19 else []  # the second crash is in the resumed run
        cmd = [sys.executable, "-m", "fedsim", "run", "--nproc", "1", "--quiet", *again, *sets(base + ["name=cut"])]
        cut = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "FEDSIM_FAULT": die})
        assert cut.returncode != 0 and json.loads((run / "checkpoints" / "latest.json").read_text())["round"] == last
        rounds = [json.loads(x)["round"] for x in (run / "metrics" / "silo_0.jsonl").read_text().splitlines()]
        assert rounds == list(range(int(die.split(":")[2])))  # records past the checkpoint, to be run again
    resumed = fedsim("run", "--nproc", "1", "--quiet", "--resume", *sets(base + ["name=cut"]))
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "whole" / "foundation.pt"), torch.load(run / "foundation.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("round", "loss", "accuracy", "foundation_accuracy", "bytes_by_dst", "sim_time_ms")
    for i in range(4):
        want, got = ([{k: r.get(k) for k in keys} for r in map(json.loads, (d / "metrics" / f"silo_{i}.jsonl")
                      .read_text().splitlines())] for d in (tmp_path / "whole", run))
        assert got == want and len(got) == 25
    attempts = json.loads((run / "checkpoints" / "attempts.json").read_text())
    assert [x["start_round"] for x in attempts] == [0, 10, 20]


def test_a_run_imports_no_torchdynamo(tmp_path):
    # TorchDynamo and TorchInductor (~1 s and ~160 MB a process) are for torch.compile, which no
    # run uses: after a whole 2-rank job, rank 0 (this process; the other rank is its fork) has
    # loaded neither
    code = f"""if True:
        import sys
        from fedsim.cli import main
        assert main(["run", "--quiet", "--nproc", "2", *{sets([*CLI_TINY, f"output_dir={tmp_path}", "name=nodynamo"])!r}]) == 0
        loaded = [m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules]
        assert not loaded, loaded
    """
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=600)
    assert (tmp_path / "nodynamo" / "summary.json").is_file()
