"""The papers' tables, reproduced on this machine's synthetic data (one subcommand per table).

``fedefm`` — FedEFM's table with seeds and matched compute: see ``benchmarks/fedefm_tables.py``
(hyper-parameters chosen on a validation split, FedAvg / FedAvg at FedEFM's budget / gossip / the
released rule / FedEFM DFL and CFL / uniform-EMD and Θ-at-the-end ablations / CLL at 0, 50 and
100 % unseen labels, mean ± std over seeds, downstream from each Θ, EMD cost).

    python benchmarks/paper_tables.py fedefm            # 3 seeds, 10 rounds, every part
    python benchmarks/paper_tables.py fedefm --quick    # 2 seeds, 4 rounds, 50 % unseen only
    python benchmarks/paper_tables.py fedefm --only select --only main --seeds 0,1,2,3

``mdhfl`` — MDH-FL (Madni et al., arXiv:2308.00155): the four client models (ShuffleNet, ResNet-10, MobileNetV2,
ResNet-12) on four silos, batch 16 (the paper's), symmetric label noise μ ∈ {0.1, 0.2, 0.3}: mean
silo test accuracy of standalone training (SCE, no exchange), FedMD, MDH-FL with plain CE and
MDH-FL (SCE + KL alignment on the public set) after 6, 20 and 40 rounds (those ≤ --rounds; the
paper trains 40), each cell mean ± std over the experiment seeds, and MDH-FL − standalone paired
by seed, beside the paper's numbers (their data, reference only). The data are the paper's
setting by default: every silo draws from the same distribution (``--partition iid``), the
heterogeneity is in the labels; ``--partition domain`` uses default.yaml's domain skew.

    python benchmarks/paper_tables.py mdhfl [--quick] [--rounds 20] [--seeds 0,1,2] [--partition iid|domain]

``mdhfl-val`` — settings the paper leaves open, chosen on a validation split carved from each
silo's training data (``data.validation_fraction``; each silo scored on its own part), never on
the test set:

    python benchmarks/paper_tables.py mdhfl-val --rounds 20 --variant a10: --variant a5:mdhfl.align_steps=5

The MDH-FL runs are ``fedsim sweep`` run folders, OUT/<row>_mu<μ>/seed<s>/ (a finished run
whose config matches is reused); the cells go to OUT/mdhfl_rows.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from fedsim.report import num  # noqa: E402
from fedsim.report import print_table as show_table  # noqa: E402

if TYPE_CHECKING:
    from benchmarks.common import Record

# ---- running ------------------------------------------------------------------------------------

def make_config(overrides: list[str], name: str):
    from fedsim.config import DEFAULT_CONFIG, load_config
    from fedsim.plan import scenario_for

    cfg = load_config(DEFAULT_CONFIG, overrides)
    cfg.scenario = scenario_for(cfg)
    cfg.name = name
    return cfg


def emd_round_share(summary: dict[str, Any]) -> tuple[float, float]:
    """(EMD seconds per rank per distillation round, share of those rounds spent in the EMD).
    ``emd_seconds`` is summed over ranks; round k ≥ 1 times are the slowest rank's."""
    rounds = summary["round_time_s"][1:]
    world = summary["world_size"]
    emd = summary.get("emd_seconds", float("nan"))
    busy = world * sum(rounds)
    return emd / world / max(len(rounds), 1), (emd / busy if busy else float("nan"))


BLOCK_STEPS = 5  # steps per timed block; a mode's time is its fastest block's mean


def distill_step_timing(cfg, steps: int, cvx_steps: int) -> dict[str, float]:
    """CPU seconds (``time.process_time``: robust to other processes on a loaded machine) per
    training step on one batch, one thread: a plain CE step (what overseas training does) and a
    distillation step (eq. 2, forward + backward, the 2 teachers of a ring silo) with w_ij forced
    uniform (no EMD at all), from the exact EMD (with and without the gradient through w_ij) and
    from cvxpylayers. Unlike ``emd_seconds`` (the EMD forward, wall clock) the difference to
    uniform also counts the backward through w_ij.

    The modes take turns block by block (``BLOCK_STEPS`` steps; cvxpylayers one step a block,
    ``cvx_steps`` blocks), after one warm-up step each, and each mode's time is its fastest
    block's mean: on a shared machine other processes only ever add CPU time (cache and core
    contention), and taking turns gives every mode the same conditions."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    from fedsim.algorithms.fedefm import distill_step
    from fedsim.data import generate
    from fedsim.models import build_model
    from fedsim.optim import Adam

    torch.set_num_threads(1)
    data = generate(cfg.train.batch_size, domains="human", image_size=cfg.data.image_size, seed=7, name="timing")
    x, y = data.images, data.labels
    torch.manual_seed(cfg.seed)
    teachers = [build_model(cfg.model, 6) for _ in range(2)]
    modes = {"plain": None, "uniform": None, "exact": None, "exact_detached": None, "cvxpylayers": None}
    if cvx_steps <= 0:  # no cvxpylayers row
        del modes["cvxpylayers"]
    for mode in modes:
        torch.manual_seed(cfg.seed)
        student = build_model(cfg.model, 6)
        emd = dataclasses.replace(cfg.emd, backend="cvxpylayers" if mode == "cvxpylayers" else "exact",
                                  grad=cfg.emd.grad and mode != "exact_detached")
        modes[mode] = (student, Adam(student.parameters(), lr=cfg.train.lr), emd,
                       torch.full((2,), 0.5) if mode == "uniform" else None)

    def step(mode: str) -> None:
        student, opt, emd, w = modes[mode]
        if mode == "plain":
            loss = F.cross_entropy(student(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            distill_step(student, opt, teachers, x, y, cfg.fedefm, emd, weights=w)

    best = {mode: float("inf") for mode in modes}
    for mode in modes:  # warm-up
        step(mode)
    for block in range(max(-(-steps // BLOCK_STEPS), cvx_steps)):
        for mode in modes:
            n = 1 if mode == "cvxpylayers" else BLOCK_STEPS
            if block >= (cvx_steps if mode == "cvxpylayers" else -(-steps // BLOCK_STEPS)):
                continue
            started = time.process_time()
            for _ in range(n):
                step(mode)
            best[mode] = min(best[mode], (time.process_time() - started) / n)
    return best


# ---- printing -----------------------------------------------------------------------------------

def _pct(v) -> str:
    return num(v, ".1f", scale=100.0)


def _num(v, spec=".1f") -> str:
    return num(v, spec)


def escape(text: str) -> str:
    """``text`` shown literally in a rich table (brackets are rich markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_table(title: str, columns: list[str], rows: list[list[str]], rec: Record | None = None) -> None:
    """A table on the console (:func:`fedsim.report.print_table`), and into ``rec`` (the run's
    result record) when given."""
    from rich.console import Console

    table = show_table(columns, rows, title=title, console=Console(width=160))
    if rec is not None:
        rec.table(table)


# ---- mdhfl: heterogeneous models and noisy labels (Madni et al., arXiv:2308.00155) --------------

HETEROGENEOUS = "[shufflenet,resnet10,mobilenetv2,resnet12]"  # MDH-FL's four client models
NOISE = (0.1, 0.2, 0.3)
PAPER_MDHFL = {0.1: 0.8369, 0.2: 0.7982, 0.3: 0.7293}  # their hematology data, reference only
MDHFL_ROWS = [
    ("standalone", "standalone (SCE, no exchange)", ["algorithm=mdhfl", "scenario=standalone"]),
    ("fedmd", "FedMD (L1 digest, CE)", ["algorithm=fedmd", "scenario=cfl"]),
    ("mdhfl_ce", "MDH-FL with plain CE (α=1, β=0)", ["algorithm=mdhfl", "scenario=cfl", "mdhfl.sce_alpha=1.0",
                                                      "mdhfl.sce_beta=0.0"]),
    ("mdhfl", "MDH-FL (SCE + KL alignment)", ["algorithm=mdhfl", "scenario=cfl"]),
]
#: the paper's data: every client draws from the same distribution ("homogeneous data"), its
#: heterogeneity is the symmetric label flips at rate μ; ``domain`` is our FedEFM-style domain skew
PARTITIONS = {"iid": ["data.partition=iid", "data.domains=null"], "domain": []}


def noise_rates(text: str) -> list[float]:
    """``"0.1,0.3"`` → [0.1, 0.3] (argparse ``type=``): label noise rates in [0, 1]."""
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        rates = []
    if not rates or not all(0.0 <= r <= 1.0 for r in rates):
        raise argparse.ArgumentTypeError(f"noise rates must be numbers in [0, 1] like 0.1,0.2, got {text!r}")
    return rates


def mdhfl_rows(text: str) -> list[str]:
    """``"standalone,mdhfl"`` → the MDH-FL table rows to run (argparse ``type=``)."""
    known = [r[0] for r in MDHFL_ROWS]
    rows = [x.strip() for x in text.split(",") if x.strip()]
    if not rows or any(r not in known for r in rows):
        raise argparse.ArgumentTypeError(f"rows must be some of {','.join(known)}, got {text!r}")
    return rows


def mdhfl_common(args: argparse.Namespace, rounds: int) -> list[str]:
    """Overrides every MDH-FL table run shares: the paper's four models with BatchNorm, as they are
    published (no weights are averaged, so batch statistics are well defined; with our default
    one-channel GroupNorm MobileNetV2 pools a per-channel-normalised 2×2 map and stays at chance),
    batch size 16 (Adam, lr 1e-3: our defaults), the partition, test evaluation in the rounds
    the table shows."""
    # test evaluation only where the table reads it (every round would add ~25% to a run)
    every = math.gcd(*(r - 1 for r in report_rounds(rounds)[:-1])) if rounds > 1 else 0
    return ["compare_with=[]", "downstream.enabled=false", f"rounds={rounds}", f"train.eval_every={every}",
            "train.batch_size=16", f"model.per_silo={args.models}", "model.norm=batch", *PARTITIONS[args.partition],
            f"data.unseen_fraction={args.unseen}", *args.set]


def report_rounds(rounds: int) -> list[int]:
    """The rounds a table shows: 6 (our former setting), 20 and 40 (the paper's) up to ``rounds``."""
    return sorted({r for r in (6, 20, 40) if r < rounds} | {rounds})


def one_line_errors(handler):
    """A handler whose user errors (FedsimError: a bad --set, …) print one line and exit 2."""
    import functools

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from fedsim.errors import FedsimError

        try:
            return handler(args)
        except FedsimError as exc:
            print(f"paper_tables.py {args.table}: error: {exc}", file=sys.stderr)
            return 2

    return wrapped


@one_line_errors
def mdhfl(args: argparse.Namespace) -> int:
    """Mean silo test accuracy (no Θ: the silos run different architectures) at label noise
    μ ∈ {0.1, 0.2, 0.3}: standalone, FedMD, MDH-FL with plain CE and MDH-FL, each cell the
    mean ± std over the experiment seeds, after 6, 20 and 40 rounds (those ≤ --rounds)."""
    from benchmarks.common import cell_stats, pm, sweep_runs

    t_start = time.perf_counter()
    out = Path(args.out)
    rounds = args.rounds or (3 if args.quick else 20)
    if any(o.split("=", 1)[0].strip() == "seed" for o in args.set):
        print("paper_tables.py mdhfl: error: set the experiment seeds with --seeds, not --set seed=...",
              file=sys.stderr)
        return 2
    common = mdhfl_common(args, rounds)
    noise = tuple(args.noise or ((0.2,) if args.quick else NOISE))
    rows_run = [r for r in MDHFL_ROWS if not args.rows or r[0] in args.rows]
    shown = report_rounds(rounds)
    seeds = args.seeds

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    def key(row: str, mu: float) -> str:
        return f"{row}_mu{int(round(100 * mu))}"

    summaries = sweep_runs([(key(row, mu), [f"data.label_noise={mu}", *ov]) for row, _, ov in rows_run for mu in noise],
                           common, seeds, out, args.nproc, log)

    def values(row: str, mu: float, read) -> list[float]:
        return [read(summaries[key(row, mu), seed]) for seed in seeds]

    def at(r: int):
        return lambda s: s["accuracy_by_round"][r - 1]

    columns = [f"μ={mu} r{r}" for mu in noise for r in shown]
    table, cells = [], {}
    for row, label, _ in rows_run:
        for mu in noise:
            for r in shown:
                cells[f"{row}/{mu}/r{r}"] = cell_stats(values(row, mu, at(r)))
        table.append([label, *[pm(values(row, mu, at(r))) for mu in noise for r in shown],
                      _num(sum(sum(values(row, mu, lambda s: s["wall_time_s"])) / len(seeds) for mu in noise)),
                      _num(summaries[key(row, noise[0]), seeds[0]]["bytes_per_round"] / 1e6, ".3f")])
    if {"mdhfl", "standalone"} <= {r[0] for r in rows_run}:  # paired by seed: same data, weights, batches
        diff = {(mu, r): [a - b for a, b in zip(values("mdhfl", mu, at(r)), values("standalone", mu, at(r)))]
                for mu in noise for r in shown}
        cells.update({f"mdhfl-standalone/{mu}/r{r}": cell_stats(v) for (mu, r), v in diff.items()})
        table.append(["MDH-FL − standalone (paired by seed)", *[pm(diff[mu, r]) for mu in noise for r in shown], "", ""])
    table.append(["paper: MDH-FL (hematology data, 40 rounds)",
                  *[_pct(PAPER_MDHFL.get(mu)) if r == shown[-1] else "" for mu in noise for r in shown], "", ""])
    seed_text = ",".join(map(str, seeds))
    print_table(f"MDH-FL: models {escape(args.models)}, 4 silos, {args.partition} data, "
                f"{100 * args.unseen:.0f}% unseen labels, batch 16 — mean silo test accuracy (%) after r rounds "
                f"at label noise μ, mean ± std over seeds {seed_text}",
                ["row", *columns, "wall s (per seed, all μ)", "MB/round"], table, args.rec)
    first = summaries[key(rows_run[0][0], noise[0]), seeds[0]]
    silos = [(x["silo"], x["model"]) for x in first["silos"]]
    mid = noise[len(noise) // 2]

    def silo_acc(i: int):
        return lambda s: next(x["accuracy"] for x in s["silos"] if x["silo"] == i)

    print_table(f"each silo after {rounds} rounds at μ = {mid} (mean ± std over seeds {seed_text})",
                ["row", *[f"silo {i}: {m}" for i, m in silos]],
                [[label, *[pm(values(row, mid, silo_acc(i))) for i, _ in silos]] for row, label, _ in rows_run],
                args.rec)
    payload = {"meta": {"rounds": rounds, "shown_rounds": shown, "seeds": seeds, "partition": args.partition,
                        "common": common},
               "cells": cells,
               "runs": {f"{k}/seed{seed}": {"accuracy_by_round": s["accuracy_by_round"], "silos": s["silos"],
                                            "wall_time_s": s["wall_time_s"]} for (k, seed), s in summaries.items()}}
    (out / "mdhfl_rows.json").write_text(json.dumps(payload, indent=2))
    log(f"total {time.perf_counter() - t_start:.0f} s; cells in {out}/mdhfl_rows.json")
    return 0


@one_line_errors
def mdhfl_val(args: argparse.Namespace) -> int:
    """MDH-FL settings the paper leaves open, chosen on a validation split carved from each silo's
    training data (``data.validation_fraction``; the test set is never read for the choice): each
    variant's mean over silos of a silo's accuracy on its own held-out part after the shown rounds,
    mean ± std over seeds."""
    from benchmarks.common import cell_stats, pm, sweep_runs

    t_start = time.perf_counter()
    rounds = args.rounds
    shown = report_rounds(rounds)
    common = [*mdhfl_common(args, rounds), f"data.label_noise={args.noise}",
              f"data.validation_fraction={args.fraction}"]

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    variants = {}
    for spec in args.variant or ["standalone:scenario=standalone", "mdhfl:"]:
        name, _, sets = spec.partition(":")
        variants[name] = ["algorithm=mdhfl", "scenario=cfl", *(x for x in sets.split(",") if x)]
    summaries = sweep_runs(list(variants.items()), common, args.seeds, Path(args.out), args.nproc, log)

    def vals(name: str, r: int) -> list[float]:
        return [summaries[name, seed]["val_accuracy_by_round"][r - 1] for seed in args.seeds]

    print_table(f"MDH-FL validation ({100 * args.fraction:.0f}% of each silo's training data held out, each silo "
                f"scored on its own part; {args.partition} data, μ = {args.noise}): mean silo accuracy (%), "
                f"mean ± std over seeds {','.join(map(str, args.seeds))}",
                ["variant", *[f"r{r}" for r in shown]],
                [[escape(f"{n} {' '.join(variants[n][2:])}"), *[pm(vals(n, r)) for r in shown]] for n in variants],
                args.rec)
    (Path(args.out) / "mdhfl_val.json").write_text(json.dumps(
        {"variants": variants, "cells": {f"{n}/r{r}": cell_stats(vals(n, r)) for n in variants for r in shown}},
        indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import Record, add_record_args, seeds_arg

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="table", required=True)
    p = sub.add_parser("fedefm", help="FedEFM vs FedAvg / gossip / released rule / CLL with seeds, "
                       "validation-chosen settings, matched compute, downstream, EMD ablation and cost")
    p.add_argument("--rounds", type=int, default=None, help="rounds for every run (default 10; 4 with --quick)")
    p.add_argument("--seeds", default=None, help="experiment seeds (default 0,1,2; 0,1 with --quick)")
    p.add_argument("--nproc", type=int, default=2, help="gloo ranks per run (CLL always 1)")
    p.add_argument("--quick", action="store_true", help="2 seeds, 4 rounds, 50%% unseen only, 30 downstream steps")
    p.add_argument("--out", default="runs/paper_tables/fedefm", help="runs, downstream cache and JSON go here")
    p.add_argument("--skip-downstream", action="store_true", help="foundation accuracy only (no fine-tuning)")
    p.add_argument("--unseen", default=None, help="unseen-label fractions of the main table, in this order "
                   "(default 0,0.5,1; 0.5 with --quick)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--fedefm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the FedEFM runs of the main table only, e.g. fedefm.beta=0.5")
    p.add_argument("--only", action="append", choices=["select", "main", "emd", "cost"],
                   help="run only these parts (repeatable)")
    p.set_defaults(handler=lambda a: __import__("fedefm_tables").fedefm(a))
    m = sub.add_parser("mdhfl", help="MDH-FL vs FedMD vs standalone with heterogeneous models and label noise")
    m.add_argument("--rounds", type=int, default=None, help="rounds per run (default 20; 3 with --quick)")
    m.add_argument("--seeds", type=seeds_arg, default=[0, 1, 2], help="experiment seeds (default 0,1,2)")
    m.add_argument("--nproc", type=int, default=2)
    m.add_argument("--quick", action="store_true", help="3 rounds, μ = 0.2 only")
    m.add_argument("--noise", type=noise_rates, default=None,
                   help="label noise rates μ, e.g. 0.2 (default 0.1,0.2,0.3)")
    m.add_argument("--rows", type=mdhfl_rows, default=None,
                   help=f"only these rows, e.g. standalone,mdhfl (of {','.join(r[0] for r in MDHFL_ROWS)})")
    m.add_argument("--models", default=HETEROGENEOUS, help=f"model.per_silo (default {HETEROGENEOUS})")
    m.add_argument("--partition", choices=sorted(PARTITIONS), default="iid",
                   help="iid: every silo draws from every domain (the paper's homogeneous data, default); "
                   "domain: default.yaml's per-silo domain mixtures")
    m.add_argument("--unseen", type=float, default=0.0, help="data.unseen_fraction (default 0: every silo sees "
                   "every class, as in MDH-FL's data)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    m.add_argument("--out", default="runs/paper_tables/mdhfl",
                   help="fedsim sweep folders (a finished run with the same config is reused; use a new --out "
                   "after changing code) and mdhfl_rows.json")
    m.set_defaults(handler=mdhfl)
    v = sub.add_parser("mdhfl-val", help="choose MDH-FL settings on a validation split of the silos' training data")
    v.add_argument("--rounds", type=int, default=20, help="rounds per run (shown: 6, 20, 40 up to it)")
    v.add_argument("--seeds", type=seeds_arg, default=[0, 1, 2])
    v.add_argument("--nproc", type=int, default=2)
    v.add_argument("--noise", type=float, default=0.2, help="data.label_noise μ (default 0.2)")
    v.add_argument("--fraction", type=float, default=0.25, help="share of each silo's training data held out")
    v.add_argument("--variant", action="append", metavar="NAME:KEY=V[,KEY=V]",
                   help="a variant (repeatable; default: standalone:scenario=standalone and mdhfl:)")
    v.add_argument("--models", default=HETEROGENEOUS)
    v.add_argument("--partition", choices=sorted(PARTITIONS), default="iid")
    v.add_argument("--unseen", type=float, default=0.0)
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    v.add_argument("--out", default="runs/paper_tables/mdhfl-val", help="fedsim sweep folders and mdhfl_val.json")
    v.set_defaults(handler=mdhfl_val)
    for sp, study in ((p, "fedefm_tables"), (m, "mdhfl"), (v, "mdhfl_val")):
        add_record_args(sp, study)
        sp.set_defaults(study=study)
    args = parser.parse_args(argv)
    args.rec = Record.from_args(args, args.study, __file__, argv, variant="quick" if getattr(args, "quick", False) else "")
    status = args.handler(args)
    if status == 0:
        args.rec.write(title=f"paper_tables.py {args.table}")
    return status


if __name__ == "__main__":
    sys.exit(main())
