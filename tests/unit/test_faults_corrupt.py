"""A corrupted neighbour (``faults.corrupt``): labels are checked against the clean ones round by
round (and through the batches the silo's training reads, DP-SGD's Poisson stream too); noised
messages against the sender's weights plus noise drawn here from the documented seed stream; a
corruption the run cannot apply is refused."""

from __future__ import annotations

import pytest
import torch

from fedsim.config import load_config
from fedsim.data import derive_seed
from fedsim.data.rank import load_rank_data
from fedsim.faults import WEIGHT_NOISE_STREAM, corrupt_labels
from fedsim.federation import state_tensors, train_steps
from fedsim.models import initial_model_factory
from fedsim.plan import build_plan
from fedsim.trainer import build_faults, build_federation
from tests.harness import TINY

CPU = torch.device("cpu")


def one_rank(tmp_path, overrides: list[str]):
    """Round 0's federation of a run on one rank, with no process group (every collective is local),
    and the rank's data."""
    cfg = load_config(None, TINY + overrides)
    plan = build_plan(cfg, tmp_path / "run", 1)
    data = load_rank_data(plan, 0)
    fed = build_federation(plan, 0, CPU, data, initial_model_factory(cfg, data.num_classes, None, data.in_channels))
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
    injector = build_faults(plan, 0, spec="")
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
    build_faults(plan, 0, spec="").before_round(0, fed)
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
    injector = build_faults(plan, 0, spec="")
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
    build_faults(plan, 0, spec="").before_round(0, fed)
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


@pytest.mark.parametrize("overrides", [["algorithm=fedmd", "faults.corrupt=[{silo: 1, kind: weight_noise, level: 1}]"],
                                       ["algorithm=fedavg", "task=segmentation",
                                        "faults.corrupt=[{silo: 1, kind: random_labels, level: 0.5}]"]])
def test_a_corruption_the_run_cannot_apply_is_refused(overrides):
    """FedMD sends no weights to noise; segmentation trains on masks, not class labels."""
    from fedsim.errors import ConfigError
    from fedsim.plan import resolve

    with pytest.raises(ConfigError, match=r"faults\.corrupt\[0\]\.kind"):
        resolve(load_config(None, TINY + ["compare_with=[]", *overrides]))
