"""Seconds per round of the FedEFM authors' regime (1-step rounds, batch 1, AdamW with the sqrt
decay, the 11-silo Gaia ring): fedsim on 1 and on 2 ranks against a plain single-process loop of
the same steps, as a ratio measured in the same session.

The loop is written out here, the way the authors' released code runs it (``communication.py``:
silos one after another in one process, a travelling copy = ``copy.deepcopy`` of the model with
its AdamW and LambdaLR, here a copy of the weights and of the optimiser's state into a reused
net): the same initial model, the same per-silo batches (each silo's seeded
shuffle), the same overseas / distillation / mixing arithmetic, the same optimiser and schedule.
It takes from fedsim only what is data or a solver — the generated data set, the model
architecture, the topology file and the EMD solver (``fedsim.emd.emd_similarity``). It evaluates
Θ *and every silo's model* on the test set in the rounds fedsim does (every ``train.eval_every``
rounds and the last), so both sides do the same work there; fedsim also writes its checkpoints
(``checkpoint.every``) and its per-round records, which the loop does not: that is overhead the
ratio charges to fedsim. Start-up (interpreter, data generation, spawning ranks) is outside both
timings: fedsim's seconds are its rounds' ``wall_time_s`` (summary.json), the loop's its rounds.

At the end both Θ are compared: with ``--nproc 1`` the sums are the same in the same order, so
they should agree to the last bit or to float64-rounding noise; the table shows the largest
difference per weight.

    python benchmarks/paper_regime.py [--rounds 300] [--algorithm fedefm|fedefm_released] [--config PATH]

Prints the table and writes ``benchmarks/results/paper_regime/<date>-<commit>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {"fedefm": REPO / "launch" / "configs" / "fedefm_paper_regime.yaml",
           "fedefm_released": REPO / "launch" / "configs" / "released_paper_regime.yaml"}
RESULTS = REPO / "benchmarks" / "results" / "paper_regime"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=300, help="rounds of each run (default 300)")
    p.add_argument("--algorithm", choices=sorted(CONFIGS), default="fedefm_released",
                   help="which regime (default fedefm_released)")
    p.add_argument("--config", type=Path, default=None,
                   help="the config to run (default launch/configs/<algorithm>_paper_regime.yaml)")
    p.add_argument("--nproc", default="1,2", help="fedsim's rank counts, comma-separated (default 1,2)")
    p.add_argument("--no-record", action="store_true", help="print the table only (no file under benchmarks/results)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# the plain loop


def _optimiser(net: torch.nn.Module, train) -> torch.optim.Optimizer:
    params = list(net.parameters())
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)


def _decay(train, steps: int) -> float:
    """The schedule's factor after ``steps`` optimiser steps (the released LambdaLR's lambda)."""
    return (1 / np.sqrt(steps) if steps > 0 else 1) if train.lr_schedule == "sqrt" else 1


class Stream:
    """A silo's endless shuffled mini-batches: a new permutation from its own generator whenever
    the current one runs out."""

    def __init__(self, dataset, batch_size: int, seed: int) -> None:
        self.ds, self.bs = dataset, min(batch_size, len(dataset))
        self.g = torch.Generator().manual_seed(seed)
        self.order, self.pos = torch.empty(0, dtype=torch.long), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.bs > len(self.order):
            self.order, self.pos = torch.randperm(len(self.ds), generator=self.g), 0
        idx = self.order[self.pos: self.pos + self.bs]
        self.pos += self.bs
        return self.ds.image_batch(idx), self.ds.labels[idx].long()


def _step(model: SimpleNamespace, loss: torch.Tensor, train) -> None:
    """One optimiser step on ``loss``, at the schedule's learning rate (what LambdaLR sets)."""
    for group in model.opt.param_groups:
        group["lr"] = train.lr * _decay(train, model.steps)
    model.opt.zero_grad(set_to_none=True)
    loss.backward()
    model.opt.step()
    model.steps += 1


def _ce_step(model: SimpleNamespace, x: torch.Tensor, y: torch.Tensor, train) -> None:
    model.net.train()
    _step(model, F.cross_entropy(model.net(x), y), train)


def _distil(model: SimpleNamespace, teachers: list[torch.nn.Module], x, y, cfg) -> None:
    """One step of eq. 2: Σ_j w_ij [βT²·KL(teacher ‖ student) + (1 − β)·CE], w_ij the EMD
    similarity of the dense features (batch mean, clamped at 0, normalised over the teachers)."""
    from fedsim.emd import emd_similarity_many

    T, beta, net = cfg.fedefm.temperature, cfg.fedefm.beta, model.net
    net.train()
    u = net.features(x)
    z_s = net.head(u)
    with torch.no_grad():
        outs = []
        for t in teachers:
            t.train()
            v = t.features(x)
            outs.append((t.head(v), v))
    if cfg.emd.backend == "uniform":
        w = torch.ones(len(teachers))
    else:
        s = emd_similarity_many(u if cfg.emd.grad else u.detach(), [v for _, v in outs], backend=cfg.emd.backend,
                                grid=cfg.emd.grid).mean(1)
        w = s.clamp_min(0.0)
    if cfg.emd.normalize:
        w = w / w.sum(0).clamp_min(1e-8)
    # ℓ_ij per teacher, its CE term included (fedsim builds each ℓ_ij alone: the same sums, in the same order)
    losses = torch.stack([beta * (T * T * F.kl_div(F.log_softmax(z_s / T, dim=1), F.log_softmax(z_t / T, dim=1),
                                                   reduction="batchmean", log_target=True))
                          + (1 - beta) * F.cross_entropy(z_s, y) for z_t, _ in outs])
    _step(model, (w * losses).sum(), cfg.train)


def _mixed(own: dict[str, torch.Tensor], others: list[dict[str, torch.Tensor]], s: float) -> dict[str, torch.Tensor]:
    """s·θ_own + (1 − s)·mean of ``others`` (ids ascending), summed in float64 in that order."""
    out = {}
    for key, t in own.items():
        acc = s * t.double()
        for o in others:
            acc += (1 - s) / len(others) * o[key].double()
        out[key] = acc.to(t.dtype)
    return out


@torch.no_grad()
def _evaluate(nets: list[torch.nn.Module], test) -> list[float]:
    """Test accuracy of each net; each test batch decoded once for all of them."""
    hits = [0] * len(nets)
    for net in nets:
        net.eval()
    for start in range(0, len(test), 256):
        x, y = test.image_batch(slice(start, start + 256)), test.labels[start:start + 256]
        for n, net in enumerate(nets):
            hits[n] += int((net(x).argmax(1) == y).sum())
    return [h / len(test) for h in hits]


def plain_loop(cfg, rounds: int) -> tuple[float, dict[str, torch.Tensor], float]:
    """(seconds per round, Θ after the last round, Θ's last test accuracy) of the loop."""
    from fedsim.data import load_federated
    from fedsim.federation import silo_seed
    from fedsim.models import build_model
    from fedsim.topology import resolve_topology

    torch.set_num_threads(1)  # as each of fedsim's ranks
    topo = resolve_topology(cfg.topology)
    n = topo.num_silos
    in_nb = {i: sorted(topo.in_neighbours(i)) for i in range(n)}
    out_nb = {j: [i for i in range(n) if j in in_nb[i]] for j in range(n)}
    data = load_federated(cfg.data, n, cfg.seed)
    models = []
    for _ in range(n):
        torch.manual_seed(cfg.seed)  # every silo starts from the same model
        net = build_model(cfg.model, data.num_classes, data.in_channels)
        models.append(SimpleNamespace(net=net, opt=_optimiser(net, cfg.train), steps=0))
    streams = [Stream(data.train[i], cfg.train.batch_size, silo_seed(cfg.seed, i)) for i in range(n)]
    released = cfg.algorithm == "fedefm_released"
    section = cfg.fedefm_released if released else cfg.fedefm
    travels = section.expert_optimizer == "travels"
    spare = [copy.deepcopy(models[0].net) for _ in range(2 * n)]  # the visitors' nets, reused
    scratch = copy.deepcopy(models[0].net)

    def visitor(i: int, slot: int) -> SimpleNamespace:
        """Silo i's model as it arrives elsewhere: its weights, and with ``travels`` a copy of its
        optimiser's state (moments, step count) and schedule position, as a deep copy would."""
        net = spare[slot]
        net.load_state_dict(models[i].net.state_dict())
        opt = _optimiser(net, cfg.train)
        if not travels:
            return SimpleNamespace(net=net, opt=opt, steps=0)
        state = models[i].opt.state_dict()
        state["state"] = {p: {key: v.clone() for key, v in st.items()} for p, st in state["state"].items()}
        opt.load_state_dict(state)
        return SimpleNamespace(net=net, opt=opt, steps=models[i].steps)

    def theta() -> dict[str, torch.Tensor]:
        states = [m.net.state_dict() for m in models]
        return {k: (sum(s[k].double() for s in states) / n).to(t.dtype) for k, t in states[0].items()}

    every, accuracy = cfg.train.eval_every, None
    t0 = time.perf_counter()
    for k in range(rounds):
        if released or k == 0:
            for i in range(n):  # local training
                for _ in range(cfg.train.local_steps):
                    _ce_step(models[i], *streams[i].next(), cfg.train)
        if released:
            copies, slot = {}, 0
            for i in range(n):  # i trains a copy of each in-neighbour j on its own data
                for j in in_nb[i]:
                    copies[(j, i)] = visitor(j, slot)
                    slot += 1
                    for _ in range(section.overseas_steps):
                        _ce_step(copies[(j, i)], *streams[i].next(), cfg.train)
            new = [_mixed(models[i].net.state_dict(), [copies[(j, i)].net.state_dict() for j in in_nb[i]],
                          section.self_weight) for i in range(n)]
        elif k > 0:
            experts, slot = {}, 0
            for j in range(n):  # host j trains each visiting θ_i (eq. 1)
                for i in out_nb[j]:
                    experts[(j, i)] = visitor(i, slot)
                    slot += 1
                    for _ in range(section.overseas_steps):
                        _ce_step(experts[(j, i)], *streams[j].next(), cfg.train)
            for i in range(n):  # EMD-weighted distillation at home (eq. 2)
                for _ in range(section.distill_steps):
                    _distil(models[i], [experts[(j, i)].net for j in in_nb[i]], *streams[i].next(), cfg)
            new = [_mixed(models[i].net.state_dict(), [experts[(i, v)].net.state_dict() for v in out_nb[i]],
                          section.self_weight) for i in range(n)]  # hosted: the visitors silo i trained
        if released or k > 0:
            for m, state in zip(models, new):
                m.net.load_state_dict(state)
        if k == rounds - 1 or every and k % every == 0:  # fedsim's evaluation rounds: Θ and every silo
            scratch.load_state_dict(theta())
            accuracy = _evaluate([scratch] + [m.net for m in models], data.test)[0]
    return (time.perf_counter() - t0) / rounds, theta(), accuracy


# ---------------------------------------------------------------------------------------------
# fedsim, as a user runs it


def fedsim_run(config: Path, rounds: int, nproc: int, out: Path) -> tuple[float, dict[str, torch.Tensor], float]:
    """(seconds per round, Θ, Θ's test accuracy) of ``python -m fedsim run CONFIG``."""
    name = f"n{nproc}"
    shutil.rmtree(out / name, ignore_errors=True)
    sets = [a for kv in (f"rounds={rounds}", f"output_dir={out}", f"name={name}") for a in ("--set", kv)]
    done = subprocess.run([sys.executable, "-m", "fedsim", "run", str(config), "--nproc", str(nproc), "--quiet", *sets],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"fedsim run failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / name / "summary.json").read_text())
    theta = torch.load(out / name / "foundation.pt")
    return summary["wall_time_s"] / rounds, theta, summary["foundation_accuracy"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from fedsim.config import load_config

    config = args.config or CONFIGS[args.algorithm]
    cfg = load_config(config, [f"rounds={args.rounds}"])
    nprocs = [int(x) for x in args.nproc.split(",") if x]
    from benchmarks.common import Record
    from fedsim.report import print_table

    rec = Record("paper_regime", __file__, argv, directory=None if args.no_record else RESULTS,
                 variant=cfg.algorithm)
    print(f"{cfg.algorithm} on {cfg.topology}, {args.rounds} rounds, evaluation every {cfg.train.eval_every}, "
          f"checkpoint every {cfg.checkpoint.every}; load average {rec.load_before[0]:.2f}", flush=True)
    loop_s, loop_theta, loop_acc = plain_loop(cfg, args.rounds)
    print(f"  plain loop: {loop_s:.4f} s/round", flush=True)
    rows = [{"runner": "plain loop", "ranks": 1, "s_per_round": loop_s, "ratio": 1.0, "theta_max_abs_diff": 0.0,
             "theta_accuracy": loop_acc}]
    with tempfile.TemporaryDirectory(prefix="paper_regime_") as tmp:
        for nproc in nprocs:
            s, theta, acc = fedsim_run(Path(config), args.rounds, nproc, Path(tmp))
            diff = max(float((theta[k].double() - loop_theta[k].double()).abs().max()) for k in loop_theta)
            rows.append({"runner": "fedsim", "ranks": nproc, "s_per_round": s, "ratio": s / loop_s,
                         "theta_max_abs_diff": diff, "theta_accuracy": acc})
            print(f"  fedsim on {nproc} rank(s): {s:.4f} s/round", flush=True)
    columns = ["runner", "ranks", "s / round", "ratio to the loop", "max abs Θ difference", "Θ accuracy"]

    def cells(r: dict) -> list[str]:
        return [r["runner"], str(r["ranks"]), f"{r['s_per_round']:.4f}", f"{r['ratio']:.2f}×",
                f"{r['theta_max_abs_diff']:.2e}", f"{r['theta_accuracy']:.4f}"]

    title = f"{cfg.algorithm} on {cfg.topology}, {args.rounds} rounds"
    rec.table(print_table(columns, [cells(r) for r in rows], title=title))
    config_path = Path(config).resolve()
    path = rec.write({"algorithm": cfg.algorithm, "rounds": args.rounds, "rows": rows,
                      "config": str(config_path.relative_to(REPO)) if config_path.is_relative_to(REPO) else str(config)},
                     title=f"Paper regime: {cfg.algorithm}, {args.rounds} rounds")
    if path is not None:
        print(f"wrote {path.relative_to(REPO)} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
