"""A corrupted neighbour (``faults.corrupt``): a silo that trains on corrupted labels or sends
noised weights, and nothing else changes. Labels are checked against the clean ones round by
round (and through the batches the silo's training actually reads, DP-SGD's Poisson stream too);
noised messages against the sender's weights plus noise drawn here from the documented seed
stream; runs on real gloo ranks against a sequential re-computation, on 1 rank against 2, and
resumed against straight; bad entries are one line and exit 2 from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedsim.checkpoint import load_silo_states
from fedsim.config import load_config
from fedsim.data import derive_seed
from fedsim.data.rank import load_rank_data
from fedsim.faults import WEIGHT_NOISE_STREAM, FaultInjector, corrupt_labels
from fedsim.federation import Federation, state_tensors, train_steps
from fedsim.launch import spawn
from fedsim.models import initial_model_factory
from fedsim.plan import build_plan
from fedsim.trainer import run_jobs

from .algorithms.test_equivalence import TINY, assign, flat, sequential_setup
from .algorithms.test_fedefm import EFM
from .test_faults import assert_same, run_several

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def one_rank(tmp_path, overrides: list[str]):
    """Round 0's federation of a run on one rank, with no process group (every collective is local),
    and the rank's data."""
    cfg = load_config(None, TINY + overrides)
    plan = build_plan(cfg, tmp_path / "run", 1)
    data = load_rank_data(plan, 0)
    fed = Federation(plan, 0, CPU, data, initial_model_factory(cfg, data.num_classes, None, data.in_channels))
    return plan, fed, data


def rows_of(dataset, images: torch.Tensor) -> list[int]:
    """Which samples of ``dataset`` a batch holds, found by their pixels (each image is unique)."""
    every = dataset.image_batch(slice(None)).reshape(len(dataset), -1)
    out = []
    for x in images.reshape(images.shape[0], -1):
        hits = (every == x).all(1).nonzero().flatten().tolist()
        assert len(hits) == 1
        out.append(hits[0])
    return out


def test_label_corruption_changes_only_the_corrupted_silos_training_labels_in_its_window(tmp_path):
    plan, fed, data = one_rank(tmp_path, [
        "algorithm=gossip", "rounds=4", "data.validation_fraction=0.25",
        "faults.corrupt=[{silo: 1, kind: label_noise, level: 0.5, start: 1, end: 2},"
        " {silo: 3, kind: random_labels, level: 0.75, start: 2}]"])
    clean = {i: s.data.labels.clone() for i, s in fed.hosted.items()}
    val = {i: data.val[i].labels.clone() for i in fed.hosted}
    test = data.test.labels.clone()
    injector = FaultInjector(plan, 0, spec="")
    n1, n3 = len(clean[1]), len(clean[3])
    seen3 = []
    for k in range(4):
        injector.before_round(k, fed)
        labels = {i: s.data.labels for i, s in fed.hosted.items()}
        changed = {i: (labels[i] != clean[i]).nonzero().flatten() for i in labels}
        # silo 1, label_noise in rounds 1-2: exactly round(0.5 n) labels, each moved to another class
        assert changed[1].numel() == (round(0.5 * n1) if k in (1, 2) else 0), k
        # silo 3, random_labels from round 2: round(0.75 n) replaced by a uniform class, some by their own
        if k >= 2:
            assert 0 < changed[3].numel() <= round(0.75 * n3)
            seen3.append(labels[3].clone())
        else:
            assert changed[3].numel() == 0
        assert changed[0].numel() == changed[2].numel() == 0  # the other silos keep their labels
        assert all(0 <= int(v) < fed.num_classes for v in labels[1].tolist() + labels[3].tolist())
        for i in fed.hosted:  # evaluation stays honest
            assert torch.equal(data.val[i].labels, val[i])
        assert torch.equal(data.test.labels, test)
        if k == 1:  # what training reads: the batches of silo 1 carry the corrupted labels
            stream = fed.hosted[1].batches
            for _ in range(3):
                x, y = stream.next()
                rows = rows_of(fed.hosted[1].data, x)
                assert torch.equal(y, labels[1][rows])
    assert torch.equal(seen3[0], seen3[1])  # the same samples, the same new classes, every round


def test_the_corruption_is_drawn_once_per_silo_and_is_uniform():
    """On 6,000 labels of 6 classes: label_noise moves exactly round(level·n) of them, each to
    another class with every shift equally likely; random_labels picks the same samples (seeded by
    the silo, not by the kind) and draws their class uniformly, the true one included."""
    n, classes, level = 6000, 6, 1 / 3
    labels = torch.arange(n) % classes
    noisy = corrupt_labels(labels, "label_noise", level, classes, seed=7, silo=2)
    moved = (noisy != labels).nonzero().flatten()
    assert moved.numel() == round(level * n) == 2000
    shifts = torch.bincount((noisy[moved] - labels[moved]) % classes, minlength=classes)
    assert shifts[0] == 0 and all(300 < int(c) < 500 for c in shifts[1:])  # 400 each expected
    random = corrupt_labels(labels, "random_labels", level, classes, seed=7, silo=2)
    replaced = (random != labels).nonzero().flatten()
    assert set(replaced.tolist()) <= set(moved.tolist())
    assert 1580 < replaced.numel() < 1750  # 2000 · 5/6 expected: a sixth keep their class
    drawn = torch.bincount(random[moved], minlength=classes)
    assert all(260 < int(c) < 410 for c in drawn)  # 333 each expected
    more = corrupt_labels(labels, "label_noise", 0.5, classes, seed=7, silo=2)
    assert set(moved.tolist()) < set((more != labels).nonzero().flatten().tolist())  # a larger level: a superset
    other = corrupt_labels(labels, "label_noise", level, classes, seed=7, silo=3)
    assert not torch.equal(other, noisy)  # another silo, other samples
    assert torch.equal(noisy, corrupt_labels(labels, "label_noise", level, classes, seed=7, silo=2))


def test_dp_sgd_poisson_batches_read_the_corrupted_labels(tmp_path):
    plan, fed, _ = one_rank(tmp_path, ["algorithm=fedavg", "privacy.mode=sample", "privacy.noise_multiplier=1.0",
                                    "faults.corrupt=[{silo: 0, kind: label_noise, level: 1.0}]"])
    clean = fed.hosted[0].data.labels.clone()
    FaultInjector(plan, 0, spec="").before_round(0, fed)
    stream = fed.hosted[0].batches
    assert type(stream).__name__ == "PoissonBatches"
    drawn = 0
    for _ in range(4):
        x, y = stream.next()
        rows = rows_of(fed.hosted[0].data, x)
        assert (y != clean[rows]).all()  # level 1: every label it reads is another class
        drawn += len(rows)
    assert drawn > 0


def noise(model_or_tensors, std: float, seed: int, k: int, send: int, src: int, dst: int) -> list[torch.Tensor]:
    """The documented noise of a message: N(0, std²) per floating-point tensor, in state order,
    float32 on the CPU from ``derive_seed(seed, WEIGHT_NOISE_STREAM, k, send, src, dst + 1)``."""
    tensors = state_tensors(model_or_tensors) if isinstance(model_or_tensors, torch.nn.Module) else model_or_tensors
    g = torch.Generator().manual_seed(derive_seed(seed, WEIGHT_NOISE_STREAM, k, send, src, dst + 1))
    return [std * torch.randn(t.shape, generator=g) if t.is_floating_point() else torch.zeros_like(t)
            for t in tensors]


def test_a_neighbour_receives_the_senders_weights_plus_the_seeded_noise(tmp_path):
    plan, fed, _ = one_rank(tmp_path, ["algorithm=gossip", "topology=ring-4",
                                    "faults.corrupt=[{silo: 2, kind: weight_noise, level: 0.1, start: 1}]"])
    injector = FaultInjector(plan, 0, spec="")
    for k in range(2):
        injector.before_round(k, fed)
        own = {i: [t.clone() for t in state_tensors(s.model)] for i, s in fed.hosted.items()}
        arcs = fed.active_arcs(k)
        for send in range(2):  # two sends in the round: each has its own noise
            got = fed.exchange(arcs, lambda j, i: state_tensors(fed.silos[j].model))
            for (j, i), tensors in got.items():
                want = own[j]
                if j == 2 and k == 1:
                    want = [t + e for t, e in zip(own[j], noise(own[j], 0.1, plan.cfg.seed, k, send, 2, i))]
                    assert any(not torch.equal(a, b) for a, b in zip(tensors, own[j]))
                for a, b in zip(tensors, want):
                    assert torch.equal(a, b), (k, j, i)
        for i, s in fed.hosted.items():  # the sender's own model is untouched
            assert all(torch.equal(a, b) for a, b in zip(state_tensors(s.model), own[i]))


def test_an_upload_to_the_server_carries_the_noise_and_theta_read_out_does_not(tmp_path):
    plan, fed, _ = one_rank(tmp_path, ["algorithm=fedavg", "faults.corrupt=[{silo: 1, kind: weight_noise, level: 0.5}]"])
    for k, s in fed.hosted.items():  # silos that differ, so the mean says whose noise is in it
        train_steps(s.model, s.optimizer, s.batches, 1 + k)
    FaultInjector(plan, 0, spec="").before_round(0, fed)
    states = {i: [t.clone() for t in state_tensors(s.model)] for i, s in fed.hosted.items()}
    theta = fed.upload_to_server(0)
    sent = dict(states)
    sent[1] = [t + e for t, e in zip(states[1], noise(states[1], 0.5, plan.cfg.seed, 0, 0, 1, -1))]
    for n, t in enumerate(theta):
        if t.is_floating_point():
            want = sum(sent[i][n].double() for i in sent) / len(sent)
            torch.testing.assert_close(t.double(), want, atol=1e-6, rtol=0)
    read_out = fed.aggregate()  # Θ as the run scores it: the silos' own models
    for n, t in enumerate(read_out):
        if t.is_floating_point():
            torch.testing.assert_close(t.double(), sum(states[i][n].double() for i in states) / 4, atol=1e-6, rtol=0)


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
    assert_same(got["g"], models)

    cfg, topo, models, opts, streams = sequential_setup(runs["f"])
    for k in range(cfg.rounds):
        for i in range(4):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        sent = [flat(m) + (flat_noise(m, 0.01, cfg.seed, k, 0, 2, -1) if i == 2 and k >= 1 else 0)
                for i, m in enumerate(models)]
        mean = torch.stack(sent).mean(0)
        for m in models:
            assign(m, mean)
    assert_same(got["f"], models)


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


@pytest.mark.parametrize("overrides", [["algorithm=fedmd", "faults.corrupt=[{silo: 1, kind: weight_noise, level: 1}]"],
                                       ["algorithm=fedavg", "task=segmentation",
                                        "faults.corrupt=[{silo: 1, kind: random_labels, level: 0.5}]"]])
def test_a_corruption_the_run_cannot_apply_is_refused(overrides):
    """FedMD sends no weights to noise; segmentation trains on masks, not class labels."""
    from fedsim.errors import ConfigError
    from fedsim.plan import resolve

    with pytest.raises(ConfigError, match=r"faults\.corrupt\[0\]\.kind"):
        resolve(load_config(None, TINY + ["compare_with=[]", *overrides]))
