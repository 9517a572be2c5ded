"""Simulated faults: silos that drop out, partial participation and links that go down. A run on
real gloo ranks (4 silos on 2 ranks) equals a sequential re-computation, written here, that
follows the same schedule: an absent silo neither trains nor sends nor receives, weighs nothing in
an aggregate, and rejoins from its last state (DFL) or from Θ (CFL); neighbours renormalise over
the silos they hear.

The checks that need no process: tests/unit/test_faults.py."""

from __future__ import annotations

import copy
import json

import torch

from fedsim.checkpoint import load_silo_states
from fedsim.federation import make_optimizer, train_steps
from tests.harness import (
    EFM,
    assert_models_close,
    assign,
    average_states,
    fedefm_distill_reference,
    flat,
    sequential_setup,
    train_ce,
)
from tests.integration.harness import run_distributed, run_several

ROUNDS = ["rounds=4"]


def schedule(run_dir, n=4, rounds=4) -> list[dict[int, str | None]]:
    """Per round: silo → None when it took part, else why not (read from metrics/*.jsonl)."""
    out = [dict() for _ in range(rounds)]
    for i in range(n):
        for line in (run_dir / "metrics" / f"silo_{i}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            assert rec["participated"] == (rec["absent"] is None)
            out[rec["round"]][i] = rec["absent"]
    return out


def present(sched, k):
    return {i for i, why in sched[k].items() if why is None}


def test_gossip_with_a_dropout_and_a_link_down_equals_the_sequential_schedule(tmp_path):
    faults = ["faults.dropout=[{silo: 1, start: 1, end: 2}]", "faults.links=[{edge: [2, 3], start: 0, end: 1}]"]
    overrides = ["algorithm=gossip", "topology=ring-4", "name=g", *ROUNDS, *faults]
    got = run_distributed(tmp_path, overrides)
    sched = schedule(tmp_path / "g")
    assert [present(sched, k) for k in range(4)] == [{0, 1, 2, 3}, {0, 2, 3}, {0, 2, 3}, {0, 1, 2, 3}]
    assert sched[1][1] == sched[2][1] == "dropout"
    down = {0: {(2, 3), (3, 2)}, 1: {(2, 3), (3, 2)}, 2: set(), 3: set()}

    cfg, topo, models, opts, streams = sequential_setup(overrides)
    n = topo.num_silos
    deg = {i: len(topo.in_neighbours(i)) for i in range(n)}
    for k in range(cfg.rounds):
        here = present(sched, k)
        for i in sorted(here):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        theta = [flat(m) for m in models]
        new = {}
        for i in sorted(here):
            heard = [j for j in topo.in_neighbours(i) if j in here and (j, i) not in down[k]]
            w = {j: 1.0 / (1 + max(deg[i], deg[j])) for j in heard}
            # Metropolis–Hastings on the full ring; a neighbour not heard leaves its weight with i
            new[i] = (1 - sum(w.values())) * theta[i] + sum(w[j] * theta[j] for j in heard)
        for i, v in new.items():
            assign(models[i], v)
    assert_models_close(got, models)
    # the reference is not blind to the schedule: silo 1 really sat rounds 1-2 out
    bytes_sent = [json.loads(x)["bytes_sent"] for x in (tmp_path / "g" / "metrics" / "silo_1.jsonl").read_text().splitlines()]
    assert bytes_sent[1] == bytes_sent[2] == 0 < bytes_sent[0]


def test_fedavg_with_client_sampling_and_a_silo_lost_for_good_equals_the_sequential_schedule(tmp_path):
    overrides = ["algorithm=fedavg", "topology=ring-4", "name=f", *ROUNDS, "faults.participation=0.5",
                 "faults.dropout=[{silo: 3, start: 2}]"]
    got = run_distributed(tmp_path, overrides)
    sched = schedule(tmp_path / "f")
    for k in range(4):  # ⌈0.5 · 4⌉ = 2 silos drawn from the available ones
        assert len(present(sched, k)) == 2 and set(sched[k].values()) <= {None, "not_sampled", "dropout"}
    assert all(sched[k][3] == "dropout" for k in (2, 3))
    assert len({frozenset(present(sched, k)) for k in range(4)}) > 1  # the draw changes with the round

    cfg, topo, models, opts, streams = sequential_setup(overrides)
    for k in range(cfg.rounds):
        here = present(sched, k)
        if k > 0:  # CFL: a silo drawn again starts from the server's Θ (the previous round's mean)
            before = present(sched, k - 1)
            theta = torch.stack([flat(models[i]) for i in sorted(before)]).mean(0)
            for i in here - before:
                assign(models[i], theta)
        for i in sorted(here):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        mean = torch.stack([flat(models[i]) for i in sorted(here)]).mean(0)
        for i in here:
            assign(models[i], mean)
    assert_models_close(got, models)
    foundation = torch.load(tmp_path / "f" / "foundation.pt")
    last = present(sched, 3)
    want = torch.stack([flat(models[i]) for i in sorted(last)]).mean(0)
    assert torch.allclose(torch.cat([t.double().reshape(-1) for t in foundation.values() if t.is_floating_point()]),
                          want, atol=1e-6)
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["participation"]["failed_silos"] == [{"silo": 3, "round": 2, "reason": "dropout"}]
    assert sum(summary["participation"]["rounds_taken_part"].values()) == 8


def test_fedefm_with_dropout_sampling_and_a_link_down_equals_the_sequential_schedule(tmp_path):
    overrides = [*EFM, "name=e", *ROUNDS, "faults.participants=3", "faults.dropout=[{silo: 0, start: 1, end: 1}]",
                 "faults.links=[{edge: [1, 2], start: 2, end: 3}]"]
    got = run_distributed(tmp_path, overrides)
    sched = schedule(tmp_path / "e")
    assert sched[1][0] == "dropout" and all(len(present(sched, k)) == 3 for k in (0, 2, 3))
    down = {k: ({(1, 2), (2, 1)} if k >= 2 else set()) for k in range(4)}

    cfg, topo, models, opts, streams = sequential_setup(overrides)
    s = cfg.fedefm.self_weight
    n = topo.num_silos
    for k in range(cfg.rounds):
        here = present(sched, k)
        if k == 0:
            for i in sorted(here):
                train_ce(models[i], opts[i], streams[i], cfg.train.local_steps)
            continue
        in_nb = {i: [j for j in topo.in_neighbours(i) if j in here and (j, i) not in down[k]] for i in here}
        experts = {}
        for j in sorted(here):  # eq. 1: each host trains its visitors in id order
            for i in sorted(i for i in here if j in in_nb[i]):
                visitor = copy.deepcopy(models[i])
                train_ce(visitor, make_optimizer(visitor, cfg), streams[j], cfg.fedefm.overseas_steps)
                experts[(j, i)] = visitor
        for i in sorted(here):  # eq. 2, 3, 11
            teachers = [experts[(j, i)] for j in in_nb[i]]
            if not teachers:
                train_ce(models[i], opts[i], streams[i], cfg.fedefm.distill_steps)
                continue
            fedefm_distill_reference(models[i], opts[i], streams[i], teachers, cfg)
        # the released rule (fedefm.mix: hosted): ½ own + ½ the mean of the visitors it hosted
        new = {}
        for j in sorted(here):
            hosted = [experts[(j, i)] for i in range(n) if (j, i) in experts]
            if hosted:
                new[j] = average_states([models[j], *hosted], [s] + [(1 - s) / len(hosted)] * len(hosted))
        for j, state in new.items():
            models[j].load_state_dict(state)
    assert_models_close(got, models, outliers=1)  # one weight of 2,304 on the 8-bit synthetic data


ALGORITHMS = {"fedprox": [], "moon": [], "feddf": ["feddf.distill_steps=1", "feddf.public_samples=16"],
              "fedmd": ["fedmd.digest_steps=1", "fedmd.public_samples=16"],
              "mdhfl": ["mdhfl.align_steps=1", "mdhfl.public_samples=16"], "fedefm_released": []}


def test_every_algorithm_leaves_an_absent_silo_untouched(tmp_path):
    """In the last round silo 2 is out: its checkpoint after that round equals the one before
    (nothing trained, sent or received) and it sent nothing, while a present silo moved."""
    run_several(tmp_path, {a: [f"algorithm={a}", "rounds=3", "faults.dropout=[{silo: 2, start: 2, end: 2}]",
                               "faults.rejoin=last", *extra] for a, extra in ALGORITHMS.items()})
    for algorithm in ALGORITHMS:
        ck = tmp_path / algorithm / "checkpoints"
        before = load_silo_states(ck / "round_1")[2]
        after = load_silo_states(ck / "round_2")[2]
        for key, value in before["model"].items():
            assert torch.equal(value, after["model"][key]), (algorithm, key)
        assert torch.equal(before["batches"]["order"], after["batches"]["order"])
        assert before["batches"]["pos"] == after["batches"]["pos"]
        moved = load_silo_states(ck / "round_2")[1]["model"]
        still = load_silo_states(ck / "round_1")[1]["model"]
        assert any(not torch.equal(v, still[k]) for k, v in moved.items()), algorithm  # a present silo did move
        rows = [json.loads(x) for x in (tmp_path / algorithm / "metrics" / "silo_2.jsonl").read_text().splitlines()]
        assert rows[-1]["absent"] == "dropout" and rows[-1]["bytes_sent"] == 0 and rows[-1]["grad_steps"] == 0
        assert rows[-2]["participated"] and rows[-2]["grad_steps"] > 0, algorithm


def test_a_straggler_slows_the_simulated_clock_and_a_deadline_leaves_it_out(tmp_path):
    base = ["algorithm=gossip", "topology=ring-4", "rounds=3", "net.compute_ms=100"]
    slow = "faults.stragglers=[{silo: 1, factor: 4}]"
    run_several(tmp_path, {"p": base, "s": base + [slow], "c": base + [slow, "faults.deadline=2"],
                           "h": base + [slow, "faults.deadline=2", "faults.past_deadline=partial"]})

    def times(name):
        return json.loads((tmp_path / name / "summary.json").read_text())["sim_time_ms"]

    plain, slow, cut, half = times("p"), times("s"), times("c"), times("h")
    assert plain[-1] < 3 * 110  # ~100 ms of compute per round, plus a few ms on the links
    assert slow[-1] >= 3 * 400  # the straggler computes 400 ms a round, and its neighbours wait for it
    sched = schedule(tmp_path / "c", rounds=3)
    assert all(sched[k][1] == "deadline" for k in range(3))
    assert cut[-1] <= plain[-1] + 1e-9  # nobody waits for a silo left out
    # partial: it stops at the deadline with ⌊2 · 2/4⌋ = 1 of its 2 local steps, 4 × 1/2 = 200 ms a round
    rows = [json.loads(x) for x in (tmp_path / "h" / "metrics" / "silo_1.jsonl").read_text().splitlines()]
    assert all(r["participated"] and r["local_steps"] == 1 and r["grad_steps"] == 1 for r in rows)
    assert 3 * 200 <= half[-1] < 3 * 210


def test_mdhfl_round_with_every_silo_of_a_rank_absent(tmp_path):
    """Silos 2 and 3 (rank 1's) are out in round 1: rank 1 still joins the all-reduce of
    distributions with nothing of its own to send; the present silos align to each other only."""
    overrides = ["algorithm=mdhfl", "name=m", "rounds=3", "mdhfl.align_steps=1", "mdhfl.public_samples=16",
                 "faults.dropout=[{silo: 2, start: 1, end: 1}, {silo: 3, start: 1, end: 1}]", "faults.rejoin=last"]
    run_distributed(tmp_path, overrides)
    sched = schedule(tmp_path / "m", rounds=3)
    assert [present(sched, k) for k in range(3)] == [{0, 1, 2, 3}, {0, 1}, {0, 1, 2, 3}]
    rows = {i: [json.loads(x) for x in (tmp_path / "m" / "metrics" / f"silo_{i}.jsonl").read_text().splitlines()]
            for i in range(4)}
    assert rows[2][1]["bytes_sent"] == rows[3][1]["bytes_sent"] == 0
    assert rows[0][1]["bytes_sent"] > 0 and rows[0][2]["bytes_sent"] == rows[0][1]["bytes_sent"]
