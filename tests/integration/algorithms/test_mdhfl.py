"""MDH-FL with heterogeneous models and noisy labels: the symmetric loss by hand, and a
distributed run (real gloo ranks) equal to a sequential re-computation written out here.

The checks that need no process: tests/unit/algorithms/test_mdhfl.py."""

from __future__ import annotations

import torch

from fedsim.checkpoint import load_silo_states
from fedsim.config import load_config
from fedsim.data import load_federated
from fedsim.federation import BatchStream, make_optimizer, silo_seed, train_steps
from fedsim.launch import spawn
from fedsim.models import build_model
from fedsim.plan import build_plan, scenario_for
from fedsim.topology import resolve_topology
from fedsim.trainer import run_rank
from tests.harness import TINY, assert_same_models, public_batches
from tests.integration.harness import run_distributed

MDHFL = ["algorithm=mdhfl", "topology=ring-4", "name=mdh", "model.per_silo=[cnn,resnet10]",
         "mdhfl.align_steps=3", "mdhfl.public_samples=32", "mdhfl.temperature=2.0", "data.label_noise=0.2",
         "accumulation_status=[1,1,0,1]", "rounds=3"]


def test_mdhfl_distributed_equals_sequential_with_heterogeneous_models(tmp_path):
    got = run_distributed(tmp_path, MDHFL)
    torch.set_num_threads(1)
    cfg = load_config(None, TINY + MDHFL)
    topo = resolve_topology(cfg.topology)
    data = load_federated(cfg.data, topo.num_silos, cfg.seed)
    assert any(bool((d.labels != d.clean_labels).any()) for d in data.train)  # the labels are noisy
    n, T, c = topo.num_silos, cfg.mdhfl.temperature, cfg.mdhfl
    models, opts, align, streams = [], [], [], []
    for i in range(n):
        torch.manual_seed(cfg.seed)
        m = build_model(cfg.model.for_silo(i), data.num_classes)
        models.append(m)
        opts.append(make_optimizer(m, cfg))
        align.append(make_optimizer(m, cfg))
        streams.append(BatchStream(data.train[i], cfg.train.batch_size, silo_seed(cfg.seed, i), torch.device("cpu")))
    assert type(models[0]) is not type(models[1])
    w = [float(s) for s in cfg.accumulation_status]

    def sce(m, x, y):  # α CE + β · 4 (1 − p_y), written out
        z, rows = m(x), torch.arange(len(y))
        ce = -torch.log_softmax(z, dim=1)[rows, y].mean()
        return c.sce_alpha * ce + c.sce_beta * (4 * (1 - torch.softmax(z, dim=1)[rows, y])).mean()

    for k in range(cfg.rounds):
        if k > 0:  # round 0: private training only; later rounds align first, then train locally
            xs = public_batches(cfg, c.public_samples, c.align_steps, k)
            with torch.no_grad():
                probs = []
                for m in models:
                    m.eval()
                    probs.append([torch.softmax(m(x) / T, dim=1).double() for x in xs])
                    m.train()
            for i in range(n):
                others = [j for j in range(n) if j != i and w[j] > 0]  # never silo i itself
                for s, x in enumerate(xs):
                    target = (sum(w[j] * probs[j][s] for j in others) / sum(w[j] for j in others)).float()
                    log_q = torch.log_softmax(models[i](x) / T, dim=1)
                    kl = T * T * (target * (torch.log(target) - log_q)).sum(1).mean()
                    align[i].zero_grad(set_to_none=True)
                    kl.backward()
                    align[i].step()
        for i in range(n):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps, sce)
    assert_same_models(got, models)


def test_mdhfl_resume_continues_exactly(tmp_path):
    # the alignment optimisers' Adam moments come back from each silo's checkpoint
    def final_models(name, splits):
        cfg = load_config(None, TINY + MDHFL + [f"output_dir={tmp_path}", f"name={name}"])
        cfg.scenario = scenario_for(cfg)
        run_dir = tmp_path / name
        run_dir.mkdir()
        for i, rounds in enumerate(splits):
            cfg.rounds = rounds
            spawn(run_rank, 2, build_plan(cfg, run_dir, 2, resume=i > 0))
        last = run_dir / "checkpoints" / f"round_{cfg.rounds - 1}"
        return {i: s["model"] for i, s in load_silo_states(last).items()}

    straight, resumed = final_models("a", [3]), final_models("b", [2, 3])
    assert sorted(straight) == sorted(resumed) == [0, 1, 2, 3]
    for i in straight:
        assert all(torch.equal(straight[i][k], resumed[i][k]) for k in straight[i])
