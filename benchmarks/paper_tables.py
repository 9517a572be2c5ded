"""The papers' tables, reproduced on this machine's synthetic data (one subcommand per table).

``fedefm`` — FedEFM's table with seeds and matched compute: see ``benchmarks/fedefm_tables.py``
(hyper-parameters chosen on a validation split, FedAvg / FedAvg at FedEFM's budget / gossip / the
released rule / FedEFM DFL and CFL / uniform-EMD and Θ-at-the-end ablations / CLL at 0, 50 and
100 % unseen labels, mean ± std over seeds, downstream from each Θ, EMD cost).

    python benchmarks/paper_tables.py fedefm            # 3 seeds, 10 rounds, every part
    python benchmarks/paper_tables.py fedefm --quick    # 2 seeds, 4 rounds, 50 % unseen only
    python benchmarks/paper_tables.py fedefm --only select --only main --seeds 0,1,2,3

``mdhfl`` — MDH-FL (seed 003): the four client models (ShuffleNet, ResNet-10, MobileNetV2,
ResNet-12) on four silos, symmetric label noise μ ∈ {0.1, 0.2, 0.3}: mean silo test accuracy of
standalone training (SCE, no exchange), FedMD, MDH-FL with plain CE and MDH-FL (SCE + KL
alignment on the public set), beside the paper's numbers (their data, reference only).

    python benchmarks/paper_tables.py mdhfl [--quick] [--rounds N]

Runs land in OUT/runs/<key>/ (a run whose config.yaml matches is reused unless --fresh);
every row goes to OUT/fedefm_rows.json and OUT/fedefm_rows.csv (…_rows_<parts>.* with --only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

# ---- running ------------------------------------------------------------------------------------

def make_config(overrides: list[str], name: str):
    from fedsim.config import DEFAULT_CONFIG, load_config
    from fedsim.plan import scenario_for

    cfg = load_config(DEFAULT_CONFIG, overrides)
    cfg.scenario = scenario_for(cfg)
    cfg.name = name
    return cfg


def run_all(configs: dict[str, Any], runs: Path, nproc: int, fresh: bool, log) -> None:
    """Every run not already finished with the same config, in as few spawns as possible: the
    distributed runs one after another in one process group of ``nproc`` gloo ranks (starting
    ranks costs ~10-30 s on a loaded machine), CLL (one pooled silo) on a single rank."""
    from fedsim.launch import spawn
    from fedsim.plan import build_plan
    from fedsim.trainer import run_jobs

    groups: dict[int, list[tuple[Any, str]]] = {}
    for key, cfg in configs.items():
        run_dir = runs / key
        text = cfg.to_yaml()
        if not fresh and (run_dir / "summary.json").is_file() and (run_dir / "config.yaml").is_file() \
                and (run_dir / "config.yaml").read_text() == text:
            log(f"  reuse {run_dir} (same config)")
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(text)
        groups.setdefault(1 if cfg.scenario == "cll" else nproc, []).append((cfg, str(run_dir)))
    for ranks, jobs in sorted(groups.items()):
        log(f"spawning {ranks} rank(s) for {len(jobs)} run(s): {', '.join(c.name for c, _ in jobs)}")
        started = time.perf_counter()
        plans = [build_plan(c, d, ranks) for c, d in jobs]
        spawn(run_jobs, ranks, plans, False, device="cpu", timeout_s=max(c.timeout_s for c, _ in jobs))
        log(f"  done in {time.perf_counter() - started:.0f} s")


def emd_round_share(summary: dict[str, Any]) -> tuple[float, float]:
    """(EMD seconds per rank per distillation round, share of those rounds spent in the EMD).
    ``emd_seconds`` is summed over ranks; round k ≥ 1 times are the slowest rank's."""
    rounds = summary["round_time_s"][1:]
    world = summary["world_size"]
    emd = summary.get("emd_seconds", float("nan"))
    busy = world * sum(rounds)
    return emd / world / max(len(rounds), 1), (emd / busy if busy else float("nan"))


def distill_step_timing(cfg, steps: int, cvx_steps: int) -> dict[str, float]:
    """CPU seconds (``time.process_time``: robust to other processes on a loaded machine) per
    training step on one batch, one thread: a plain CE step (what overseas training does) and a
    distillation step (eq. 2, forward + backward, the 2 teachers of a ring silo) with w_ij forced
    uniform (no EMD at all), from the exact EMD and from cvxpylayers. Unlike ``emd_seconds`` (the
    EMD forward, wall clock) the difference to uniform also counts the backward through w_ij."""
    import torch
    import torch.nn.functional as F

    from fedsim.algorithms.fedefm import distill_step
    from fedsim.data import generate
    from fedsim.models import build_model

    torch.set_num_threads(1)
    data = generate(cfg.train.batch_size, domains="human", image_size=cfg.data.image_size, seed=7, name="timing")
    x, y = data.images, data.labels
    torch.manual_seed(cfg.seed)
    teachers = [build_model(cfg.model, 6) for _ in range(2)]
    out: dict[str, float] = {}
    grad = cfg.emd.grad
    for mode, n in (("plain", steps), ("uniform", steps), ("exact", steps), ("exact_detached", steps),
                    ("cvxpylayers", cvx_steps)):
        torch.manual_seed(cfg.seed)
        student = build_model(cfg.model, 6)
        opt = torch.optim.Adam(student.parameters(), lr=cfg.train.lr)
        cfg.emd.backend = "exact" if mode in ("plain", "uniform", "exact_detached") else mode
        cfg.emd.grad = grad and mode != "exact_detached"
        w = torch.full((2,), 0.5) if mode == "uniform" else None
        for i in range(n + 1):  # the first step is a warm-up
            if i == 1:
                started = time.process_time()
            if mode == "plain":
                loss = F.cross_entropy(student(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                distill_step(student, opt, teachers, x, y, cfg, weights=w)
        out[mode] = (time.process_time() - started) / n
    cfg.emd.grad = grad
    return out


# ---- printing -----------------------------------------------------------------------------------

def _pct(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}"


def _num(v, spec=".1f") -> str:
    return "–" if v is None or v != v else format(v, spec)


def escape(text: str) -> str:
    """``text`` shown literally in a rich table (brackets are rich markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=160).print(table)


# ---- mdhfl: heterogeneous models and noisy labels (seed 003) ------------------------------------

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


def mdhfl(args: argparse.Namespace) -> int:
    """Mean silo test accuracy (no Θ: the silos run different architectures) at label noise
    μ ∈ {0.1, 0.2, 0.3}: standalone, FedMD, MDH-FL with plain CE and MDH-FL."""
    t_start = time.perf_counter()
    out = Path(args.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rounds = args.rounds or (3 if args.quick else 6)
    common = ["compare_with=[]", "downstream.enabled=false", f"rounds={rounds}", "train.eval_every=0",
              f"model.per_silo={args.models}", f"data.unseen_fraction={args.unseen}", *args.set]
    noise = (0.2,) if args.quick else NOISE

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    configs = {f"{key}_mu{int(round(100 * mu))}": make_config([*common, f"data.label_noise={mu}", *ov],
                                                               f"{key}_mu{int(round(100 * mu))}")
               for key, _, ov in MDHFL_ROWS for mu in noise}
    log(f"{len(configs)} runs planned: {', '.join(configs)}")
    run_all(configs, runs, args.nproc, args.fresh, log)
    table, rows = [], []
    for key, label, _ in MDHFL_ROWS:
        cells, wall = [], 0.0
        for mu in noise:
            s = json.loads((runs / f"{key}_mu{int(round(100 * mu))}" / "summary.json").read_text())
            cells.append(_pct(s["mean_silo_accuracy"]))
            wall += s["wall_time_s"]
            rows.append({"key": key, "label": label, "label_noise": mu, "mean_silo_accuracy": s["mean_silo_accuracy"],
                         "silo_accuracy": {x["model"]: x["accuracy"] for x in s["silos"]},
                         "mb_per_round": s["bytes_per_round"] / 1e6, "wall_time_s": s["wall_time_s"]})
        table.append([label, *cells, _num(wall), _num(rows[-1]["mb_per_round"], ".3f")])
    table.append(["paper: MDH-FL (hematology data)", *[_pct(PAPER_MDHFL[mu]) for mu in noise], "", ""])
    print_table(f"MDH-FL (seed 003): models {escape(args.models)}, 4 silos, {rounds} rounds, "
                f"{100 * args.unseen:.0f}% unseen labels — mean silo test accuracy (%) at label noise μ",
                ["row", *[f"μ = {mu}" for mu in noise], "wall s (sum)", "MB/round"], table)
    (out / "mdhfl_rows.json").write_text(json.dumps({"meta": {"rounds": rounds, "common": common}, "rows": rows},
                                                    indent=2))
    log(f"total {time.perf_counter() - t_start:.0f} s; rows in {out}/mdhfl_rows.json")
    return 0


def main(argv: list[str] | None = None) -> int:
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
    m.add_argument("--rounds", type=int, default=None, help="rounds per run (default 6; 3 with --quick)")
    m.add_argument("--nproc", type=int, default=2)
    m.add_argument("--quick", action="store_true", help="3 rounds, μ = 0.2 only")
    m.add_argument("--models", default=HETEROGENEOUS, help=f"model.per_silo (default {HETEROGENEOUS})")
    m.add_argument("--unseen", type=float, default=0.0, help="data.unseen_fraction (default 0: every silo sees "
                   "every class, as in MDH-FL's data)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    m.add_argument("--out", default="runs/paper_tables/mdhfl")
    m.add_argument("--fresh", action="store_true")
    m.set_defaults(handler=mdhfl)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
