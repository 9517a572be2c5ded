"""FedDF and FedMD (FedMD / FedDF-style distillation): a distributed run (real gloo
ranks, 4 silos on 2 ranks) equals a single-process sequential re-computation written here
independently — explicit loops over silos, an explicit mean of the logits, explicit KL / L1.

The checks that need no process: tests/unit/algorithms/test_distillation_baselines.py."""

from __future__ import annotations

import copy

import torch

from fedsim.checkpoint import load_silo_states
from fedsim.config import load_config
from fedsim.federation import train_steps
from fedsim.launch import spawn
from fedsim.plan import build_plan, scenario_for
from fedsim.trainer import run_rank
from tests.harness import TINY, assert_same_models, assign, flat, kl_t2, public_batches, sequential_setup
from tests.integration.harness import run_distributed

PUBLIC_STREAM = 0xFEDDF  # the documented seed stream of the public-batch order


@torch.no_grad()
def mean_logits(models, xs, weights) -> list[torch.Tensor]:
    """Per public batch, Σ w_i z_i / Σ w_i over the silos (eval mode), in float64."""
    out = []
    for x in xs:
        zs = []
        for m in models:
            m.eval()
            zs.append(m(x).double())
            m.train()
        out.append((sum(w * z for w, z in zip(weights, zs)) / sum(weights)).float())
    return out


def ce(m, x, y):
    return torch.nn.functional.cross_entropy(m(x), y)


# ------------------------------------------------------------------------- distributed = sequential


def test_feddf_matches_sequential_ensemble_distillation(tmp_path):
    """ϑ = [1, 0, 1, 1]: silo 1 is out of both Θ and the ensemble, but still receives Θ. 20
    public samples for 3 steps of 8 exercise the wrap-around of the public batches."""
    steps, lr, T, samples, status = 3, 1e-2, 2.0, 20, [1, 0, 1, 1]
    overrides = ["algorithm=feddf", "topology=ring-4", "name=df", f"feddf.distill_steps={steps}",
                 f"feddf.lr={lr}", f"feddf.temperature={T}", f"feddf.public_samples={samples}",
                 f"accumulation_status={status}", "train.lr=0.01"]  # silos that differ: a real teacher
    got = run_distributed(tmp_path, overrides)
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    moved = 0.0
    for k in range(cfg.rounds):
        for i in range(topo.num_silos):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps, ce)
        theta = sum(w * flat(m) for w, m in zip(status, models)) / sum(status)
        xs = public_batches(cfg, samples, steps, k)
        teacher = mean_logits(models, xs, status)
        server = copy.deepcopy(models[0])
        assign(server, theta)
        server.train()
        adam = torch.optim.Adam(server.parameters(), lr=lr)
        for x, z in zip(xs, teacher):
            loss = kl_t2(server(x), z, T)
            adam.zero_grad()
            loss.backward()
            adam.step()
        moved = max(moved, (flat(server) - theta).abs().max().item())
        for m in models:
            assign(m, flat(server))
    assert moved > 1e-4  # the distillation really changes Θ (this is not FedAvg)
    assert_same_models(got, models)


def fedmd_reference(overrides, samples, steps):
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    digest_opts = [torch.optim.Adam(m.parameters(), lr=cfg.train.lr) for m in models]
    for k in range(cfg.rounds):
        if k > 0:  # round 0 trains on private data only
            xs = public_batches(cfg, samples, steps, k)
            consensus = mean_logits(models, xs, [1.0] * topo.num_silos)
            for i, m in enumerate(models):
                m.train()
                for x, c in zip(xs, consensus):
                    loss = (m(x) - c).abs().mean()
                    digest_opts[i].zero_grad()
                    loss.backward()
                    digest_opts[i].step()
        for i in range(topo.num_silos):  # revisit
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps, ce)
    return models


FEDMD = ["algorithm=fedmd", "topology=ring-4", "name=md", "fedmd.digest_steps=3", "fedmd.public_samples=32",
         "rounds=3"]


def test_fedmd_matches_sequential_digest_and_revisit(tmp_path):
    got = run_distributed(tmp_path, FEDMD)
    models = fedmd_reference(FEDMD, 32, 3)
    assert_same_models(got, models)
    # no weight averaging: the silos' models stay different
    assert (flat(models[0]) - flat(models[1])).abs().max() > 1e-3


def test_fedmd_resume_keeps_the_digest_optimisers(tmp_path):
    """Two rounds, then ``--resume`` for the third: the same models as the uninterrupted
    reference (the digest optimisers' Adam moments come back from the checkpoint)."""
    cfg = load_config(None, TINY + FEDMD + ["rounds=2", f"output_dir={tmp_path}"])
    cfg.scenario = scenario_for(cfg)
    run_dir = tmp_path / cfg.name
    run_dir.mkdir(parents=True)
    spawn(run_rank, 2, build_plan(cfg, run_dir, 2))
    cfg.rounds = 3
    spawn(run_rank, 2, build_plan(cfg, run_dir, 2, resume=True))
    got = {i: list(s["model"].values()) for i, s in load_silo_states(run_dir / "checkpoints" / "round_2").items()}
    assert sorted(got) == [0, 1, 2, 3]
    assert_same_models(got, fedmd_reference(FEDMD, 32, 3))
