"""FedEFM under the microscope: what each part of FedEFM contributes, in our regime and in the
authors' released regime, on data whose test set is split into the cells the silos hold and the
cells none holds, and with one corrupted neighbour — the situation EMD weighting is meant for.

    python benchmarks/fedefm_study.py                    # 5 seeds, both regimes, every condition
    python benchmarks/fedefm_study.py --quick            # 2 seeds, a few rounds: a smoke test
    python benchmarks/fedefm_study.py --regime ours --seeds 0-4 --conditions u50,corrupt

**Conditions** (synthetic data; ``data.unseen_fraction``): ``u0``, ``u50``, ``u100`` (the paper's
default is 100% unseen) and ``corrupt`` — 50% unseen with silo 1 training on uniformly random labels
for the whole run (``faults.corrupt``). In FedEFM a silo's teachers are its own model trained at
each neighbour, so silo 1's neighbours receive one teacher trained on garbage: the EMD weight
w_ij is meant to notice it.

**Regimes.** ``ours``: the embedded default (ring of 4 silos, batch 32, Adam 1e-3, 10 local /
overseas / distillation steps, 10 rounds). ``paper``: ``launch/configs/fedefm_paper_regime.yaml``
(the authors' released settings: the 11-silo Gaia ring, batch 1, one step of each kind per round,
AdamW with their sqrt decay, the copy's optimiser travels with it), run for ``--paper-rounds``
rounds (default 300) — far fewer than their 6400 on this 2-core machine; the record says how many —
under ``u100`` (the paper's default) and ``corrupt``, with the arms of ``PAPER_ARMS`` by default.

**Arms** (:func:`arms`): pooled training (CLL) at matched sequential depth and at matched total
gradient steps, standalone, FedAvg / gossip / the released rule at 1 and 10 local steps (ours) or
1 (paper), FedEFM whole, and FedEFM without each part: β = 0 (no distillation term), uniform w_ij,
EMD not normalised over the teachers, EMD detached (no gradient through w), Θ only at the end,
the paper's expert direction instead of the hosted mix, and the other ``expert_optimizer``.

**Reported**, per condition and arm, mean ± std over the seeds: Θ test accuracy (the final round;
never a round chosen on the test set — the best round is a separate column, labelled), Θ on the
in-union and out-of-union test cells, gradient steps per silo per round, sequential steps between
mixes (:func:`sequential_depth`), MB per round, w_ij statistics from the metric records (mean,
spread between a silo's teachers, and the weight on the corrupted teacher against the clean ones),
and the paired difference of each arm to FedEFM whole with its 95% t confidence interval (paired
by seed). Figures: Θ accuracy against cumulative gradient steps and against sequential steps.

Every run is a ``fedsim sweep`` run folder under ``--out`` (reused when its config matches, so an
interrupted study continues); the tables go to ``benchmarks/results/fedefm_study/<date>-<commit>.md``
with the same numbers as JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from rich.console import Console  # noqa: E402

from fedsim.report import markdown_table, pm, print_table  # noqa: E402
from fedsim.stats import mean_std, paired_ci  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "launch" / "configs" / "fedefm_paper_regime.yaml"
RESULTS = REPO / "benchmarks" / "results" / "fedefm_study"
CORRUPT_SILO = 1  # in both regimes' rings silo 1 has two neighbours that are not corrupted
CONDITIONS: dict[str, list[str]] = {
    "u0": ["data.unseen_fraction=0.0"],
    "u50": ["data.unseen_fraction=0.5"],
    "u100": ["data.unseen_fraction=1.0"],
    "corrupt": ["data.unseen_fraction=0.5",
                f"faults.corrupt=[{{silo: {CORRUPT_SILO}, kind: random_labels, level: 1.0}}]"],
}
#: the local SGD step size of SCAFFOLD, FedNova and their FedAvg-with-SGD reference (both methods
#: are defined for plain SGD steps), chosen for FedAvg with SGD on a validation split (20% of each
#: silo's training data, u50, 10 rounds, seeds 0 and 1): Θ validation accuracy 0.28 / 0.32 / 0.70 /
#: 0.82 / 0.35 at 0.03 / 0.1 / 0.3 / 1.0 / 3.0 (2026-12-02)
SGD_LR = 1.0
#: FedOpt's server step size η with Adam clients at the default lr 1e-3, chosen likewise: Θ validation
#: accuracy 0.37 / 0.64 / 0.76 / 0.42 at η 0.003 / 0.01 / 0.03 / 0.1
FEDOPT_SERVER_LR = 0.03
WHOLE = "fedefm"  # the arm every other arm is compared with
#: the order the (regime, condition) pairs run in: the most telling first
PRIORITY = [("ours", "u50"), ("ours", "corrupt"), ("paper", "u100"), ("paper", "corrupt"), ("ours", "u100"),
            ("ours", "u0"), ("paper", "u50"), ("paper", "u0")]
#: the paper regime's default arms: FedEFM, its parts that the released regime changes or that
#: matter most, and the baselines at the released code's one local step
PAPER_ARMS = ("fedefm", "no_kd", "uniform_w", "optimizer_other", "released_L1", "fedavg_L1", "gossip_L1", "cll_total")


@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    overrides: tuple[str, ...]


def arms(regime: str, local_steps: int, silos: int, budget: int) -> list[Arm]:
    """The study's arms in ``regime`` (``local_steps``: the regime's L; ``budget``: FedEFM's
    gradient steps per silo per round, which CLL at matched total steps takes for every silo)."""
    efm = ("algorithm=fedefm", "scenario=dfl")
    whole_optimizer = "travels" if regime == "paper" else "fresh"
    other_optimizer = "fresh" if whole_optimizer == "travels" else "travels"
    ls = (1,) if regime == "paper" else (1, 10)
    out = [
        Arm("cll_depth", f"CLL, matched sequential depth ({local_steps} steps/round)",
            ("algorithm=fedavg", "scenario=cll", f"train.local_steps={local_steps}")),
        Arm("cll_total", f"CLL, matched total steps ({silos * budget} steps/round)",
            ("algorithm=fedavg", "scenario=cll", f"train.local_steps={silos * budget}")),
        Arm("standalone", "Standalone (mean of the silos' own models)", ("algorithm=fedavg", "scenario=standalone")),
    ]
    for algo, title, scenario in (("fedavg", "FedAvg", "cfl"), ("gossip", "Gossip", "dfl"),
                                  ("fedefm_released", "Released rule", "dfl")):
        for L in ls:
            key = f"{'released' if algo == 'fedefm_released' else algo}_L{L}"
            extra = (f"fedefm_released.expert_optimizer={whole_optimizer}",) if algo == "fedefm_released" else ()
            out.append(Arm(key, f"{title}, L = {L}", (f"algorithm={algo}", f"scenario={scenario}",
                                                      f"train.local_steps={L}", *extra)))
    if regime == "ours":  # the server-side baselines (SGD clients where the method is defined for SGD)
        sgd = ("train.optimizer=sgd", "train.momentum=0", f"train.lr={SGD_LR}", f"train.local_steps={local_steps}")
        out += [
            Arm(f"fedavg_sgd_L{local_steps}", f"FedAvg, SGD {SGD_LR:g}, L = {local_steps}",
                ("algorithm=fedavg", "scenario=cfl", *sgd)),
            Arm(f"fedopt_L{local_steps}", f"FedOpt (server Adam, η {FEDOPT_SERVER_LR:g}), L = {local_steps}",
                ("algorithm=fedopt", "scenario=cfl", "fedopt.server_optimizer=adam",
                 f"fedopt.server_lr={FEDOPT_SERVER_LR}", f"train.local_steps={local_steps}")),
            Arm(f"scaffold_L{local_steps}", f"SCAFFOLD, SGD {SGD_LR:g}, L = {local_steps}",
                ("algorithm=scaffold", "scenario=cfl", *sgd)),
            Arm(f"fednova_L{local_steps}", f"FedNova, SGD {SGD_LR:g}, L = {local_steps}",
                ("algorithm=fednova", "scenario=cfl", *sgd)),
        ]
    out += [
        Arm(WHOLE, "FedEFM whole", (*efm, f"fedefm.expert_optimizer={whole_optimizer}")),
        Arm("no_kd", "− distillation (β = 0)", (*efm, f"fedefm.expert_optimizer={whole_optimizer}", "fedefm.beta=0.0")),
        Arm("uniform_w", "− EMD (uniform w_ij)", (*efm, f"fedefm.expert_optimizer={whole_optimizer}",
                                                  "emd.backend=uniform")),
        Arm("emd_unnormalised", "EMD not normalised over teachers",
            (*efm, f"fedefm.expert_optimizer={whole_optimizer}", "emd.normalize=false")),
        Arm("emd_detached", "EMD detached (no gradient through w)",
            (*efm, f"fedefm.expert_optimizer={whole_optimizer}", "emd.grad=false")),
        Arm("aggregate_end", "− mixing (Θ only at the end)",
            (*efm, f"fedefm.expert_optimizer={whole_optimizer}", "fedefm.aggregate=end")),
        Arm("mix_experts", "experts mix (the paper's direction) instead of hosted",
            (*efm, f"fedefm.expert_optimizer={whole_optimizer}", "fedefm.mix=experts")),
        Arm("optimizer_other", f"expert_optimizer: {other_optimizer}",
            (*efm, f"fedefm.expert_optimizer={other_optimizer}")),
    ]
    return out


def steps_per_round_of_a_lineage(cfg) -> int:
    """Sequential optimiser steps one model lineage takes in a round after round 0, whether or not
    it mixes afterwards: the x-axis unit of the figure's sequential-steps panels."""
    depth = sequential_depth(cfg)
    if depth is not None:
        return depth
    if cfg.algorithm == "fedefm":  # Θ only at the end: θ_i's own distillation steps
        return cfg.fedefm.distill_steps
    return cfg.train.local_steps


def sequential_depth(cfg) -> int | None:
    """Optimiser steps a model lineage takes between two mixes in a round after round 0 (the
    longest lineage); None when the silos never mix (Θ only at the end, CLL, standalone)."""
    L = cfg.train.local_steps
    if cfg.scenario in ("cll", "standalone"):
        return None
    if cfg.algorithm == "fedefm":
        fe = cfg.fedefm
        if fe.aggregate == "end":
            return None
        # visitors take the overseas steps from θ_i, θ_i its distillation steps; then they mix
        return max(fe.overseas_steps, fe.distill_steps)
    if cfg.algorithm == "fedefm_released":
        return L + cfg.fedefm_released.overseas_steps  # a neighbour's L steps, then the visit at the host
    return L


# ---- statistics (mean ± std and the paired t interval: fedsim.stats) -------------------------------

def weight_stats(records: dict[int, list[dict[str, Any]]], corrupted: int | None) -> dict[str, float | None]:
    """From a run's metric records ({silo: [record per round]}): the mean w_ij and s_ij over every
    (silo, round, teacher), the mean spread max_j w_ij − min_j w_ij of a silo's teachers in a round,
    and — for the silos one of whose teachers was trained on the corrupted silo's data — the mean
    weight on that teacher and on their clean teachers."""
    ws, sims, spreads, bad, clean = [], [], [], [], []
    for silo_records in records.values():
        for rec in silo_records:
            w = rec.get("teacher_weights")
            if not w:
                continue
            ws += list(w.values())
            sims += list((rec.get("teacher_similarity") or {}).values())
            if len(w) > 1:
                spreads.append(max(w.values()) - min(w.values()))
            if corrupted is not None and str(corrupted) in w and len(w) > 1:
                bad.append(w[str(corrupted)])
                clean += [v for k, v in w.items() if k != str(corrupted)]

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    return {"w_mean": mean(ws), "s_mean": mean(sims), "w_spread": mean(spreads),
            "w_corrupted": mean(bad), "w_clean": mean(clean)}


def read_records(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    out = {}
    for path in sorted((run_dir / "metrics").glob("silo_*.jsonl")):
        out[int(path.stem.split("_")[1])] = [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


def curve(records: dict[int, list[dict[str, Any]]]) -> tuple[list[float], list[float | None]]:
    """(cumulative gradient steps per silo after each round — the mean over silos —, Θ accuracy
    after each round)."""
    by_round: dict[int, list[dict[str, Any]]] = {}
    for silo_records in records.values():
        for rec in silo_records:
            by_round.setdefault(rec["round"], []).append(rec)
    steps, acc, total = [], [], 0.0
    for k in sorted(by_round):
        recs = by_round[k]
        total += sum(r.get("grad_steps", 0) for r in recs) / len(recs)
        steps.append(total)
        acc.append(recs[0].get("foundation_accuracy"))
    return steps, acc


# ---- running -----------------------------------------------------------------------------------

def run_condition(regime: str, condition: str, arm_list: Sequence[Arm], seeds: Sequence[int], common: list[str],
                  config: Path | None, out: Path, parallel: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Every (arm, seed) of one condition through fedsim.sweep (1 rank per run, ``parallel`` process
    groups at a time) → {arm key: {seed: {"summary", "run_dir", "cfg"}}}."""
    from fedsim.sweep import Point, execute, plan

    points = [Point(f"{regime}/{condition}/{a.key}", [*CONDITIONS[condition], *a.overrides], a.key)
              for a in applicable(arm_list, condition)]
    runs = plan(config, common, points, seeds, out / regime / condition, nproc=1)
    log(f"{regime}/{condition}: {len(runs)} runs ({len(points)} arms × seeds {','.join(map(str, seeds))})")
    execute(runs, parallel, log=log)
    found: dict[str, Any] = {}
    for r in runs:
        found.setdefault(r.point.folder, {})[r.seed] = {
            "summary": json.loads((r.run_dir / "summary.json").read_text()), "run_dir": r.run_dir, "cfg": r.cfg}
    return found


def applicable(arm_list: Sequence[Arm], condition: str) -> list[Arm]:
    """The arms that can run under ``condition``: pooled data has no silo to corrupt."""
    return [a for a in arm_list if not (condition == "corrupt" and "scenario=cll" in a.overrides)]


def analyse(regime: str, condition: str, arm_list: Sequence[Arm], found: dict[str, Any]) -> dict[str, Any]:
    """Per arm: every measured value per seed, mean ± std, paired differences to FedEFM whole."""
    corrupted = CORRUPT_SILO if condition == "corrupt" else None
    rows: dict[str, Any] = {}
    for arm in applicable(arm_list, condition):
        per_seed: dict[int, dict[str, Any]] = {}
        curves = {}
        for seed, got in sorted(found[arm.key].items()):
            s = got["summary"]
            records = read_records(Path(got["run_dir"]))
            own = arm.key == "standalone"  # no shared model: the silos' own models are the result
            acc = s.get("mean_silo_accuracy") if own else s.get("foundation_accuracy")
            by_round = s.get("accuracy_by_round") if own else s.get("foundation_accuracy_by_round")
            per_seed[seed] = {
                "accuracy": acc,
                "in_union": None if own else s.get("foundation_accuracy_in_union"),
                "out_of_union": None if own else s.get("foundation_accuracy_out_of_union"),
                "best_round_on_test": max((a for a in by_round or [] if a is not None), default=None),
                "grad_steps_per_round": s.get("grad_steps_per_round"),
                "mb_per_round": s.get("bytes_per_round", 0.0) / 1e6,
                "wall_s": s.get("wall_time_s"),
                **weight_stats(records, corrupted),
            }
            curves[seed] = curve(records)
        cfg = next(iter(found[arm.key].values()))["cfg"]
        keys = dict.fromkeys(k for v in per_seed.values() for k in v)
        rows[arm.key] = {"label": arm.label, "overrides": list(arm.overrides), "per_seed": per_seed,
                         "depth": sequential_depth(cfg), "lineage_steps": steps_per_round_of_a_lineage(cfg),
                         "stats": {k: dict(zip(("mean", "std"), mean_std([v[k] for v in per_seed.values()])))
                                   for k in keys},
                         "curves": curves}
    whole = rows[WHOLE]["per_seed"]
    for key, row in rows.items():
        row["paired"] = {m: paired_ci({s: v[m] for s, v in row["per_seed"].items()},
                                      {s: v[m] for s, v in whole.items()})
                         for m in ("accuracy", "in_union", "out_of_union")} if key != WHOLE else {}
    return {"regime": regime, "condition": condition, "rows": rows}


# ---- reporting ---------------------------------------------------------------------------------

def fmt(stat: dict[str, Any] | None, scale: float = 100.0, spec: str = ".1f") -> str:
    return pm((stat or {}).get("mean"), (stat or {}).get("std"), spec, scale=scale)


def fmt_ci(ci: dict[str, Any] | None) -> str:
    if not ci:
        return "–"
    lo, hi = 100 * (ci["mean"] - ci["half_width"]), 100 * (ci["mean"] + ci["half_width"])
    sign = "+" if ci["mean"] >= 0 else ""
    verdict = " *" if lo > 0 or hi < 0 else ""  # the interval excludes 0
    return f"{sign}{100 * ci['mean']:.1f} [{lo:+.1f}, {hi:+.1f}]{verdict}"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    weights = any(r["stats"].get("w_mean", {}).get("mean") is not None for r in result["rows"].values())
    corrupt = result["condition"] == "corrupt"
    cols = ["arm", "Θ acc %", "Δ vs whole [95% CI]", "in-union %", "Δ in-union", "out-of-union %",
            "grad steps/silo/round", "seq. steps between mixes", "MB/round", "best round on test % (optimistic)"]
    if weights:
        cols += ["w mean", "w spread"] + (["w corrupted / clean"] if corrupt else [])
    out = []
    for key, r in result["rows"].items():
        st = r["stats"]
        cells = [r["label"], fmt(st.get("accuracy")), "(reference)" if key == WHOLE else fmt_ci(r["paired"].get("accuracy")),
                 fmt(st.get("in_union")), "" if key == WHOLE else fmt_ci(r["paired"].get("in_union")),
                 fmt(st.get("out_of_union")), fmt(st.get("grad_steps_per_round"), 1.0),
                 "no mix" if r["depth"] is None else str(r["depth"]), fmt(st.get("mb_per_round"), 1.0, ".2f"),
                 fmt(st.get("best_round_on_test"))]
        if weights:
            cells += [fmt(st.get("w_mean"), 1.0, ".3f"), fmt(st.get("w_spread"), 1.0, ".3f")]
            if corrupt:
                bad, clean = st.get("w_corrupted", {}), st.get("w_clean", {})
                cells.append("–" if not bad or bad.get("mean") is None else
                             f"{bad['mean']:.3f} / {clean['mean']:.3f}")
        out.append(cells)
    return cols, out


def corrupted_teacher_ci(result: dict[str, Any]) -> dict[str, Any] | None:
    """FedEFM whole under ``corrupt``: w on the corrupted teacher − w on the clean ones, paired by seed."""
    rows = result["rows"][WHOLE]["per_seed"]
    bad = {s: v.get("w_corrupted") for s, v in rows.items()}
    clean = {s: v.get("w_clean") for s, v in rows.items()}
    return paired_ci(bad, clean)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Θ accuracy (mean over seeds) per round, one column per (regime, condition): against the
    cumulative gradient steps per silo (top) and against the cumulative sequential steps of a model
    lineage (bottom: rounds × steps per round of a lineage, :func:`steps_per_round_of_a_lineage`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5 * len(results), 8), squeeze=False)
    colours = plt.get_cmap("tab20").colors
    for col, res in enumerate(results):
        for n_arm, (key, r) in enumerate(res["rows"].items()):
            if key == "standalone" or not r["curves"]:
                continue
            seeds = list(r["curves"].values())
            n = min(len(c[0]) for c in seeds)
            steps = [sum(c[0][i] for c in seeds) / len(seeds) for i in range(n)]
            ys = [[c[1][i] for c in seeds if c[1][i] is not None] for i in range(n)]
            acc = [sum(v) / len(v) if v else float("nan") for v in ys]
            style = {"lw": 2.4, "color": "black"} if key == WHOLE else {"lw": 1.0, "color": colours[n_arm % 20],
                                                                          "ls": "--" if n_arm >= 10 else "-"}
            axes[0][col].plot(steps, acc, label=r["label"], marker=".", **style)
            axes[1][col].plot([(i + 1) * r["lineage_steps"] for i in range(n)], acc, label=r["label"], marker=".",
                              **style)
        for row, xlabel in enumerate(("gradient steps per silo (cumulative)", "sequential steps of a lineage")):
            ax = axes[row][col]
            ax.set_title(f"{res['regime']} · {res['condition']}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("Θ test accuracy")
            ax.set_xscale("symlog")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_record(results: list[dict[str, Any]], meta: dict[str, Any], record_dir: Path) -> Path:
    """``<date>-<commit>.md`` and ``.json`` (and the figure) under ``record_dir``, from the results,
    through the benchmarks' one record writer (:func:`common.write_record`)."""
    from common import write_record as write

    pending = [j for j in meta.get("planned", []) if j not in meta.get("done", [])]
    md = [*([f"**Partial record**: done {', '.join(meta['done'])}; still to run {', '.join(pending)}.", ""]
            if pending else []),
          f"Seeds {meta['seeds']}; ours: {meta['rounds']} rounds; paper regime: {meta['paper_rounds']} rounds "
          "(the released code runs 6400). Mean ± std over seeds; Δ: the arm minus FedEFM whole, paired by seed, with "
          "its 95% t interval (* = the interval excludes 0). Θ is the final round's; the best round on the test set "
          "is shown only as the labelled column.", ""]
    tables = []
    for res in results:
        cols, rows = table_rows(res)
        title = f"{res['regime']} regime · {res['condition']}"
        tables.append({"title": title, "columns": cols, "rows": rows})
        md += [f"## {title}", "", markdown_table(cols, rows), ""]
        if res["condition"] == "corrupt":
            ci = corrupted_teacher_ci(res)
            if ci:
                md += [f"FedEFM whole: w on the corrupted teacher − w on a clean one = {ci['mean']:+.4f} "
                       f"[{ci['mean'] - ci['half_width']:+.4f}, {ci['mean'] + ci['half_width']:+.4f}] (95% CI, "
                       f"{ci['n']} seeds)", ""]
    slim = [{**res, "rows": {k: {kk: vv for kk, vv in r.items() if kk != "curves"} for k, r in res["rows"].items()}}
            for res in results]
    return write(record_dir, study="fedefm_study", title="FedEFM study", command=meta["command"], body="\n".join(md),
                 tables=tables, data={"meta": meta, "results": slim}, load_before=meta.get("load_before"),
                 wall_s=meta.get("wall_s"), figures={"theta.png": lambda path: plot(results, path)})


def regime_settings(regime: str, rounds: int, paper_rounds: int, quick: bool) -> tuple[Path | None, list[str]]:
    """(the config file, the overrides every run of the regime shares)."""
    common = ["compare_with=[]", "downstream.enabled=false"]
    if regime == "ours":
        return None, [*common, f"rounds={rounds}", *(["data.test_samples=256"] if quick else [])]
    every = max(1, paper_rounds // 5)  # 11 silos scored each time: evaluation would outweigh 1-step rounds
    return PAPER_CONFIG, [*common, f"rounds={paper_rounds}", f"train.eval_every={every}", f"checkpoint.every={every}",
                          *(["data.test_samples=256"] if quick else [])]


def main(argv: list[str] | None = None) -> int:
    from common import seeds_arg

    from fedsim.experiment import resolve_config
    from fedsim.topology import resolve_topology

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 seeds, 3 rounds (paper regime: 30), conditions u50 and "
                   "corrupt: a smoke test of the whole pipeline")
    p.add_argument("--seeds", type=seeds_arg, default=None, help="experiment seeds (default 0-4; 0,1 with --quick)")
    p.add_argument("--regime", action="append", choices=["ours", "paper"], help="regimes (default both)")
    p.add_argument("--conditions", default=None, help=f"our regime's conditions, comma-separated, of "
                   f"{','.join(CONDITIONS)} (default all; u50,corrupt with --quick)")
    p.add_argument("--paper-conditions", default=None, help="the paper regime's conditions (default u100,corrupt: "
                   "the paper's default and the EMD's purpose; each run there is ~10x one of ours)")
    p.add_argument("--arms", default=None, help="our regime's arms, comma-separated keys (default all; fedefm is "
                   "always run)")
    p.add_argument("--paper-arms", default=",".join(PAPER_ARMS),
                   help=f"the paper regime's arms (default {','.join(PAPER_ARMS)}: a run there costs ~10x one of ours; "
                   "'all' for every arm)")
    p.add_argument("--rounds", type=int, default=None, help="rounds in our regime (default 10; 3 with --quick)")
    p.add_argument("--paper-rounds", type=int, default=None,
                   help="rounds in the paper regime (default 300; 30 with --quick; the released code runs 6400)")
    p.add_argument("--parallel", type=int, default=2, help="runs at once, one rank each (default 2)")
    p.add_argument("--out", default="runs/fedefm_study", help="run folders (reused when the config matches)")
    p.add_argument("--record", default=str(RESULTS), help="where the dated result record goes")
    args = p.parse_args(argv)

    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2, 3, 4])
    rounds = args.rounds or (3 if args.quick else 10)
    paper_rounds = args.paper_rounds or (30 if args.quick else 300)
    regimes = args.regime or ["ours", "paper"]
    conditions = {
        "ours": args.conditions.split(",") if args.conditions else ["u50", "corrupt"] if args.quick else list(CONDITIONS),
        "paper": args.paper_conditions.split(",") if args.paper_conditions else ["u100", "corrupt"],
    }
    unknown = [c for cs in conditions.values() for c in cs if c not in CONDITIONS]
    if unknown:
        p.error(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(CONDITIONS)}")
    if args.parallel < 1:
        p.error("--parallel must be >= 1")
    out = Path(args.out)
    t0 = time.perf_counter()
    load_before = list(os.getloadavg())

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    plans = {}
    for regime in regimes:
        config, common = regime_settings(regime, rounds, paper_rounds, args.quick)
        cfg, _ = resolve_config(config, [*common, "algorithm=fedefm", "scenario=dfl"])
        topo = resolve_topology(cfg.topology)
        hosted = max(len(topo.out_neighbours(i)) for i in range(topo.num_silos))
        budget = cfg.fedefm.overseas_steps * hosted + cfg.fedefm.distill_steps
        arm_list = arms(regime, cfg.train.local_steps, topo.num_silos, budget)
        chosen = args.arms if regime == "ours" else (None if args.paper_arms == "all" else args.paper_arms)
        if chosen:
            wanted = set(chosen.split(",")) | {WHOLE}
            bad = wanted - {a.key for a in arm_list}
            if bad:
                p.error(f"unknown arm(s) {', '.join(sorted(bad))}; choose from {', '.join(a.key for a in arm_list)}")
            arm_list = [a for a in arm_list if a.key in wanted]
        plans[regime] = (config, common, arm_list)
    # the most telling conditions first (the default data, the corrupted neighbour, the paper's own
    # regime), so a study stopped early has them; the record is rewritten after each one
    jobs = sorted(((r, c) for r in regimes for c in conditions[r]), key=lambda rc: PRIORITY.index(rc)
                  if rc in PRIORITY else len(PRIORITY))
    results: list[dict[str, Any]] = []
    path = None
    for regime, condition in jobs:
        config, common, arm_list = plans[regime]
        found = run_condition(regime, condition, arm_list, seeds, common, config, out, args.parallel, log)
        res = analyse(regime, condition, arm_list, found)
        results.append(res)
        cols, rows = table_rows(res)
        print_table(cols, rows, title=f"{regime} regime · {condition}", console=Console(width=220))  # 13 columns
        meta = {"load_before": load_before,
                "command": " ".join(["python", "benchmarks/fedefm_study.py", *(argv or sys.argv[1:])]),
                "seeds": seeds, "rounds": rounds, "paper_rounds": paper_rounds, "wall_s": time.perf_counter() - t0,
                "done": [f"{r['regime']}/{r['condition']}" for r in results],
                "planned": [f"{r}/{c}" for r, c in jobs]}
        if path is not None:  # the same record, now with one more condition
            for old in (path, path.with_suffix(".json"), path.parent / f"{path.stem}-theta.png"):
                old.unlink(missing_ok=True)
        path = write_record(results, meta, Path(args.record))
    log(f"record: {path}")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_script

    run_script(main)
