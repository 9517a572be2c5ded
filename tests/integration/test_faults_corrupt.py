"""A corrupted neighbour (``faults.corrupt``): a silo that trains on corrupted labels or sends
noised weights, and nothing else changes. Labels are checked against the clean ones round by
round (and through the batches the silo's training actually reads, DP-SGD's Poisson stream too);
noised messages against the sender's weights plus noise drawn here from the documented seed
stream; runs on real gloo ranks against a sequential re-computation, on 1 rank against 2, and
resumed against straight; bad entries are one line and exit 2 from the command line.

The checks that need no process: tests/unit/test_faults_corrupt.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fedsim.checkpoint import load_silo_states
from fedsim.config import load_config
from fedsim.data import derive_seed
from fedsim.faults import WEIGHT_NOISE_STREAM
from fedsim.federation import state_tensors, train_steps
from fedsim.launch import spawn
from fedsim.plan import build_plan
from fedsim.trainer import run_jobs
from tests.harness import EFM, REPO, TINY, assert_models_close, assign, flat, sequential_setup
from tests.integration.harness import run_several


def noise(model_or_tensors, std: float, seed: int, k: int, send: int, src: int, dst: int) -> list[torch.Tensor]:
    """The documented noise of a message: N(0, std²) per floating-point tensor, in state order,
    float32 on the CPU from ``derive_seed(seed, WEIGHT_NOISE_STREAM, k, send, src, dst + 1)``."""
    tensors = state_tensors(model_or_tensors) if isinstance(model_or_tensors, torch.nn.Module) else model_or_tensors
    g = torch.Generator().manual_seed(derive_seed(seed, WEIGHT_NOISE_STREAM, k, send, src, dst + 1))
    return [std * torch.randn(t.shape, generator=g) if t.is_floating_point() else torch.zeros_like(t)
            for t in tensors]


CORRUPT_EFM = [*EFM, "rounds=3", "faults.corrupt=[{silo: 1, kind: random_labels, level: 0.5, start: 1},"
               " {silo: 2, kind: weight_noise, level: 0.05, start: 1}]"]


def test_fedefm_with_a_corrupted_neighbour_is_the_same_on_1_and_2_ranks_and_after_resume(tmp_path):
    def plans(names_rounds, nproc, resume=False):
        out = []
        for name, rounds in names_rounds:
            cfg = load_config(None, TINY + CORRUPT_EFM + [f"rounds={rounds}", f"output_dir={tmp_path}", f"name={name}"])
            out.append(build_plan(cfg, tmp_path / name, nproc, resume))
        return out

    spawn(run_jobs, 2, plans([("two", 3), ("part", 2)], 2), False)
    spawn(run_jobs, 1, plans([("one", 3), ("part", 3)], 1, resume=True), True)
    last = {name: load_silo_states(tmp_path / name / "checkpoints" / "round_2") for name in ("two", "one", "part")}
    for name in ("one", "part"):
        for i in range(4):
            for key, value in last["two"][i]["model"].items():
                assert torch.equal(value, last[name][i]["model"][key]), (name, i, key)
    for name in ("two", "one", "part"):
        rows = [json.loads(x) for x in (tmp_path / name / "metrics" / "silo_1.jsonl").read_text().splitlines()]
        assert [r.get("corrupted") for r in rows] == [None, "random_labels", "random_labels"]
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["participation"]["corrupted_rounds"] == {"1": {"random_labels": 2}, "2": {"weight_noise": 2}}


def test_gossip_and_fedavg_with_a_noised_sender_equal_the_sequential_reference(tmp_path):
    """Silo 2 sends noised weights from round 1: on a ring its neighbours 1 (on the other rank)
    and 3 (on its own) mix θ_2 + noise, while silo 2 mixes its clean θ_2; FedAvg's Θ averages
    θ_2 + noise."""
    corrupt = "faults.corrupt=[{silo: 2, kind: weight_noise, level: 0.01, start: 1}]"
    runs = {"g": ["algorithm=gossip", "topology=ring-4", corrupt], "f": ["algorithm=fedavg", corrupt]}
    run_several(tmp_path, runs)
    got = {name: {i: list(s["model"].values()) for i, s in
                  load_silo_states(tmp_path / name / "checkpoints" / "round_1").items()} for name in runs}

    cfg, topo, models, opts, streams = sequential_setup(runs["g"])
    deg = {i: len(topo.in_neighbours(i)) for i in range(4)}
    for k in range(cfg.rounds):
        for i in range(4):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        theta = [flat(m) for m in models]
        new = {}
        for i in range(4):
            heard = {}
            for j in topo.in_neighbours(i):
                heard[j] = theta[j]
                if j == 2 and k >= 1:
                    heard[j] = theta[j] + flat_noise(models[j], 0.01, cfg.seed, k, 0, 2, i)
            w = {j: 1.0 / (1 + max(deg[i], deg[j])) for j in heard}
            new[i] = (1 - sum(w.values())) * theta[i] + sum(w[j] * heard[j] for j in heard)
        for i, v in new.items():
            assign(models[i], v)
    assert_models_close(got["g"], models)

    cfg, topo, models, opts, streams = sequential_setup(runs["f"])
    for k in range(cfg.rounds):
        for i in range(4):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        sent = [flat(m) + (flat_noise(m, 0.01, cfg.seed, k, 0, 2, -1) if i == 2 and k >= 1 else 0)
                for i, m in enumerate(models)]
        mean = torch.stack(sent).mean(0)
        for m in models:
            assign(m, mean)
    assert_models_close(got["f"], models)


def flat_noise(model, std, seed, k, send, src, dst) -> torch.Tensor:
    return torch.cat([e.double().reshape(-1) for e, t in zip(noise(model, std, seed, k, send, src, dst),
                                                             state_tensors(model)) if t.is_floating_point()])


ALL = {"fedavg": [], "gossip": [], "fedefm": EFM[1:], "fedefm_released": [], "fedprox": [], "moon": [],
       "feddf": ["feddf.distill_steps=1", "feddf.public_samples=16"],
       "fedmd": ["fedmd.digest_steps=1", "fedmd.public_samples=16"],
       "mdhfl": ["mdhfl.align_steps=1", "mdhfl.public_samples=16"]}


def test_every_algorithm_trains_on_the_corrupted_labels_only_in_the_window(tmp_path):
    """Against the same run without corruption: round 0 (before the window) is identical, round 1
    (in it) differs for the corrupted silo, and its records say so."""
    corrupt = "faults.corrupt=[{silo: 1, kind: label_noise, level: 1.0, start: 1}]"
    runs = {}
    for algorithm, extra in ALL.items():
        runs[f"{algorithm}-clean"] = [f"algorithm={algorithm}", *extra]
        runs[f"{algorithm}-corrupt"] = [f"algorithm={algorithm}", *extra, corrupt]
    run_several(tmp_path, runs)
    for algorithm in ALL:
        for k, same in ((0, True), (1, False)):
            a = load_silo_states(tmp_path / f"{algorithm}-clean" / "checkpoints" / f"round_{k}")[1]["model"]
            b = load_silo_states(tmp_path / f"{algorithm}-corrupt" / "checkpoints" / f"round_{k}")[1]["model"]
            assert all(torch.equal(a[key], b[key]) for key in a) == same, (algorithm, k)
        rows = [json.loads(x) for x in (tmp_path / f"{algorithm}-corrupt" / "metrics" / "silo_1.jsonl")
                .read_text().splitlines()]
        assert [(r.get("corrupted"), r.get("corruption_level")) for r in rows] == [(None, None), ("label_noise", 1.0)]


BAD = {
    "unknown_silo": "[{silo: 4, kind: random_labels, level: 0.5}]",
    "labels_level": "[{silo: 1, kind: label_noise, level: 1.5}]",
    "noise_level": "[{silo: 1, kind: weight_noise, level: -0.1}]",
    "start_after_end": "[{silo: 1, kind: random_labels, level: 0.5, start: 1, end: 0}]",
    "end_outside": "[{silo: 1, kind: random_labels, level: 0.5, end: 2}]",
    "overlap": "[{silo: 1, kind: random_labels, level: 0.5, end: 1}, {silo: 1, kind: weight_noise, level: 1, start: 1}]",
    "kind": "[{silo: 1, kind: flipped_labels, level: 0.5}]",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_corruption_is_one_line_and_exit_2(tmp_path, case):
    out = subprocess.run([sys.executable, "-m", "fedsim", "run", "--quiet", "--set", "algorithm=gossip",
                          "--set", "rounds=2", "--set", "compare_with=[]", "--set", f"output_dir={tmp_path / 'runs'}",
                          "--set", f"faults.corrupt={BAD[case]}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    err = out.stderr.strip()
    assert out.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("fedsim: error: ") and "faults.corrupt[" in err
    assert not (tmp_path / "runs").exists()  # nothing was started or written
