"""FedEFM's paper table on our synthetic data, with seeds and matched compute.

Run through ``python benchmarks/paper_tables.py fedefm [--quick] [--only PART]``. Parts:

* ``select`` — FedEFM (DFL) settings the papers leave open, chosen on a **validation split**
  (``data.validation_fraction``, carved from each silo's training data; the test set is never
  read for the choice): first the end-of-round mixing rule (``fedefm.mix`` hosted / experts /
  gossip, and ``aggregate: end`` for reference), then β, then T, then the overseas steps, each
  stage keeping the previous winners — mean ± std of Θ's validation accuracy over the seeds. A
  candidate replaces the current setting only when its mean is higher by more than one standard
  error of the difference (:func:`pick`).
* ``main`` — for unseen-label fractions 0 / 50 / 100 %: FedAvg (CFL), FedAvg with FedEFM's
  gradient-step budget, gossip (DFL), the authors' released rule, FedEFM (DFL), FedEFM (CFL),
  FedEFM with uniform w_ij instead of the EMD, FedEFM with Θ only at the end (the old reading),
  CLL — Θ test accuracy, gradient steps per silo per round, MB per round, wall time and
  downstream Dice / mIoU / Jaccard / tube accuracy fine-tuned from each Θ and from random
  weights; mean ± std over the seeds. Also writes ``fedefm_by_round.png`` (Θ accuracy by round,
  FedEFM vs FedAvg vs the released rule, ± std bands).
* ``emd`` — the EMD ablation at 100 % unseen: uniform w_ij, EMD detached, EMD differentiable.
* ``cost`` — the EMD's share of a FedEFM round (exact vs cvxpylayers; see paper_tables.py).

Every run is a ``fedsim sweep`` run folder under OUT/sweep (reused when its config matches; use
a new --out after changing code). Downstream scores are cached per foundation file under
OUT/downstream (keyed by the files' contents and the downstream settings).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

UNSEEN = (0.0, 0.5, 1.0)
#: the FedEFM paper's foundation accuracy on its private data (reference only, not comparable)
PAPER_FOUNDATION = {"fedavg": 0.809, "fedefm_cfl": 0.982, "fedefm_dfl": 0.975}
VALIDATION = 0.1  # share of each silo's training data held out for the choices of `select`


def _tag(u: float) -> str:
    return f"u{int(round(100 * u))}"


def main_rows(budget: int, silos: int, local_steps: int) -> list[tuple[str, str, list[str]]]:
    """(key, label, overrides) of the main table."""
    return [
        ("fedavg", "FedAvg (CFL)", ["algorithm=fedavg", "scenario=cfl"]),
        ("fedavg_budget", f"FedAvg (CFL), FedEFM's budget ({budget} steps)",
         ["algorithm=fedavg", "scenario=cfl", f"train.local_steps={budget}"]),
        ("gossip", "Gossip (DFL)", ["algorithm=gossip", "scenario=dfl"]),
        ("released", "Released-code rule (DFL)", ["algorithm=fedefm_released", "scenario=dfl"]),
        ("fedefm_dfl", "FedEFM (DFL)", ["algorithm=fedefm", "scenario=dfl"]),
        ("fedefm_cfl", "FedEFM (CFL)", ["algorithm=fedefm", "scenario=cfl"]),
        ("fedefm_uniform", "FedEFM (DFL), uniform w_ij", ["algorithm=fedefm", "scenario=dfl", "emd.backend=uniform"]),
        ("fedefm_end", "FedEFM (DFL), Θ only at the end", ["algorithm=fedefm", "scenario=dfl", "fedefm.aggregate=end"]),
        # CLL pools every silo's data on one silo: the federation's sample budget per round
        ("cll", "CLL (centralized)", ["algorithm=fedavg", "scenario=cll", f"train.local_steps={local_steps * silos}"]),
    ]


EMD_ROWS = [
    ("fedefm_uniform", "uniform w_ij", ["algorithm=fedefm", "scenario=dfl", "emd.backend=uniform"]),
    ("fedefm_detached", "EMD detached (grad=false)", ["algorithm=fedefm", "scenario=dfl", "emd.grad=false"]),
    ("fedefm_dfl", "EMD differentiable (the paper)", ["algorithm=fedefm", "scenario=dfl"]),
]

SELECT_STAGES = [
    ("mixing rule", [("fedefm.mix=hosted", ["fedefm.mix=hosted"]), ("fedefm.mix=experts", ["fedefm.mix=experts"]),
                     ("fedefm.mix=gossip", ["fedefm.mix=gossip"]), ("fedefm.aggregate=end", ["fedefm.aggregate=end"])]),
    ("β", [(f"fedefm.beta={b}", [f"fedefm.beta={b}"]) for b in (0.0, 0.2, 0.5)]),
    ("T", [(f"fedefm.temperature={t}", [f"fedefm.temperature={t}"]) for t in (1.0, 3.0)]),
    ("overseas steps", [(f"fedefm.overseas_steps={s}", [f"fedefm.overseas_steps={s}"]) for s in (5, 10)]),
]


def _sweep(points, seeds, out: Path, common: list[str], nproc: int, log):
    from fedsim.sweep import Point, collect, execute, plan, slug

    # a folder per distinct config: a label whose settings change (e.g. FedEFM's budget after a
    # new choice on validation) gets a new folder instead of colliding with the old runs
    runs = plan(None, common, [Point(label, ov, f"{slug(label)}-{_digest(ov)}") for label, ov in points], seeds,
                out, nproc)
    execute(runs, 1, log=log)
    return runs, {row["point"]: row for row in collect(runs)}


def select(args, common: list[str], seeds: list[int], out: Path, log) -> dict[str, Any]:
    """Coordinate-wise choice on Θ's validation accuracy; returns the chosen overrides."""
    from paper_tables import print_table

    print_table = functools.partial(print_table, rec=getattr(args, "rec", None))  # the tables go into the record

    from fedsim.report import pm as fmt

    chosen: list[str] = []
    report = []
    base = [*common, f"data.validation_fraction={VALIDATION}", "algorithm=fedefm", "scenario=dfl",
            "data.unseen_fraction=0.5"]
    previous: tuple[str, list[str]] | None = None  # the last stage's winner (label, settings)
    for stage, candidates in SELECT_STAGES:
        stage_points = []
        for _label, ov in candidates:
            keep = [c for c in chosen if c.split("=")[0] not in {o.split("=")[0] for o in ov}]
            settings = [*keep, *ov]
            # a point is named by the settings that differ from the defaults; the candidate equal to
            # the last winner is that very run (same folder), not a new one
            label = ",".join(o for o in settings if not _is_default(o, base)) or "defaults"
            if previous is not None and label == previous[0]:
                settings = previous[1]
            stage_points.append((label, settings))
        stage_points = list(dict(stage_points).items())
        _, rows = _sweep(stage_points, seeds, out / "select", base, args.nproc, log)
        winner = pick(stage_points, rows, incumbent=",".join(o for o in chosen if not _is_default(o, base))
                      or "defaults", n=len(seeds))
        best = dict(stage_points)[winner]
        previous = (winner, best)
        stage_key = candidates[0][1][0].split("=")[0]
        chosen = [c for c in best if c.split("=")[0] != "fedefm.aggregate"] if stage_key == "fedefm.mix" else best
        # the loss beside the accuracy: on ~100 validation images two settings whose predictions
        # agree score the same accuracy (β = 0 and 0.2 did, seed by seed) while their losses differ
        table = [[label, fmt(rows[label]["mean"].get("foundation_val_accuracy"),
                             rows[label]["std"].get("foundation_val_accuracy")),
                  fmt(rows[label]["mean"].get("foundation_val_loss"), rows[label]["std"].get("foundation_val_loss")),
                  f"{rows[label]['mean'].get('grad_steps_per_round', 0):.1f}",
                  "← chosen" if label == winner else ""] for label, _ in stage_points]
        print_table(f"select {stage}: FedEFM (DFL), 50% unseen, Θ validation accuracy "
                    f"(mean ± std, {len(seeds)} seeds; the test set is not read)",
                    ["setting", "Θ val acc", "Θ val loss", "grad steps/round", ""], table)
        report.append({"stage": stage, "rows": {label: {"mean": rows[label]["mean"], "std": rows[label]["std"]}
                                                for label, _ in stage_points}, "chosen": winner})
    log(f"selected on validation: {' '.join(chosen)}")
    (out / "selected.json").write_text(json.dumps({"chosen": chosen, "stages": report}, indent=2))
    return {"chosen": chosen, "stages": report}


def pick(points, rows, incumbent: str, n: int) -> str:
    """The setting to keep: the best validation mean, unless it beats the current setting
    (``incumbent``) by no more than one standard error of the difference of the two means —
    then the current one stays (a validation set of ~100 images moves in 1% steps; a choice
    should not chase that noise)."""
    import math

    def stat(label):
        return (rows[label]["mean"].get("foundation_val_accuracy") or 0.0,
                rows[label]["std"].get("foundation_val_accuracy") or 0.0)

    best = max((label for label, _ in points), key=lambda label: stat(label)[0])
    if incumbent not in rows or best == incumbent:
        return best
    (mb, sb), (mi, si) = stat(best), stat(incumbent)
    return best if mb - mi > math.sqrt((sb * sb + si * si) / max(n, 1)) else incumbent


def _digest(overrides: list[str]) -> str:
    return hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]


def _is_default(override: str, base: list[str]) -> bool:
    """Whether ``override`` leaves the config made of ``base`` unchanged."""
    from fedsim.config import DEFAULT_CONFIG, load_config

    return load_config(DEFAULT_CONFIG, [*base, override]).to_dict() == load_config(DEFAULT_CONFIG, base).to_dict()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def downstream_for(foundations: dict[str, Path], cfg, seed: int, cache: Path, log) -> dict[str, dict]:
    """Fine-tune from random weights and from each foundation (same data, seed, decoder/head
    init and batch order), cached by the files' contents and the downstream settings."""
    import dataclasses

    from fedsim.downstream import compare_initializations, rows_to_json

    # one fine-tune per (foundation, experiment seed), with the experiment seed: the table's ± is
    # over experiment seeds, each foundation paired with random init under the same fine-tune seed
    ds_cfg = dataclasses.replace(cfg.downstream, seeds=[seed])
    settings = {"downstream": dataclasses.asdict(ds_cfg), "model": dataclasses.asdict(cfg.model),
                "image_size": cfg.data.image_size, "seed": seed}
    out: dict[str, dict] = {}
    todo: dict[str, Any] = {}
    cache.mkdir(parents=True, exist_ok=True)
    for name, path in {"random": None, **foundations}.items():
        key = hashlib.sha256(json.dumps({**settings, "file": _sha(path) if path else "random"},
                                        sort_keys=True, default=str).encode()).hexdigest()[:20]
        hit = cache / f"{key}.json"
        if hit.is_file():
            out[name] = json.loads(hit.read_text())
        else:
            todo[name] = (path, hit)
    if todo:
        log(f"  downstream (seed {seed}): {', '.join(todo)}")
        rows = rows_to_json(compare_initializations({n: (str(p) if p else None) for n, (p, _) in todo.items()},
                                                    cfg.model, ds_cfg, cfg.data.image_size, seed))
        for row in rows:
            out[row["init"]] = row
            todo[row["init"]][1].write_text(json.dumps(row))
    return out


def fedefm(args) -> int:
    from paper_tables import distill_step_timing, emd_round_share, make_config, print_table

    print_table = functools.partial(print_table, rec=getattr(args, "rec", None))  # the tables go into the record

    from fedsim.report import pm as fmt
    from fedsim.sweep import plot_rows
    from fedsim.topology import resolve_topology

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([0, 1] if args.quick else [0, 1, 2])
    rounds = args.rounds or (4 if args.quick else 10)
    common = ["compare_with=[]", "downstream.enabled=false", f"rounds={rounds}", f"data.validation_fraction={VALIDATION}",
              *args.set]
    if args.quick:
        common += ["data.test_samples=256", "downstream.steps=30"]
    sections = set(args.only or ["select", "main", "emd", "cost"])
    fractions = tuple(float(u) for u in args.unseen.split(",")) if args.unseen else (0.5,) if args.quick else UNSEEN

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    results: dict[str, Any] = {"meta": {"rounds": rounds, "seeds": seeds, "common": common, "quick": args.quick}}
    if "select" in sections:
        results["select"] = select(args, common, seeds, out, log)
    # the FedEFM rows use the settings chosen on validation (this run's, or a previous one's)
    fedefm_set = list(args.fedefm_set)
    if (out / "selected.json").is_file() and not fedefm_set:
        fedefm_set = json.loads((out / "selected.json").read_text())["chosen"]
        log(f"FedEFM rows use the settings chosen on validation: {' '.join(fedefm_set) or 'the defaults'}")
    results["meta"]["fedefm_settings"] = fedefm_set

    base = make_config([*common, *fedefm_set], "base")
    topo = resolve_topology(base.topology)
    hosted = max(len(topo.out_neighbours(i)) for i in range(topo.num_silos))
    budget = base.fedefm.overseas_steps * hosted + base.fedefm.distill_steps
    rows_def = main_rows(budget, topo.num_silos, base.train.local_steps)

    def point(u: float, key: str, ov: list[str]) -> tuple[str, list[str]]:
        own = {o.split("=")[0] for o in ov}  # a row's own setting (e.g. aggregate=end) wins
        extra = [o for o in fedefm_set if o.split("=")[0] not in own] if "algorithm=fedefm" in ov else []
        return f"{_tag(u)}/{key}", [f"data.unseen_fraction={u}", *extra, *ov]

    if "main" in sections or "emd" in sections:
        points = []
        if "main" in sections:
            points += [point(u, key, ov) for u in fractions for key, _, ov in rows_def]
        if "emd" in sections:
            points += [point(1.0, key, ov) for key, _, ov in EMD_ROWS]
        points = list(dict((label, (label, ov)) for label, ov in points).values())
        log(f"{len(points)} settings × {len(seeds)} seeds")
        runs, rows = _sweep(points, seeds, out / "sweep", common, args.nproc, log)
        dirs = {(r.point.label, r.seed): r.run_dir for r in runs}
        results["rows"] = {label: {"mean": r["mean"], "std": r["std"],
                                   "seeds": {s: v["values"] for s, v in r["seeds"].items()}} for label, r in rows.items()}

    if "main" in sections:
        downstream: dict[tuple[str, int], dict] = {}
        if not args.skip_downstream:
            for u in fractions:
                for seed in seeds:
                    found = {key: dirs[(f"{_tag(u)}/{key}", seed)] / "foundation.pt" for key, _, _ in rows_def}
                    ds = downstream_for(found, make_config([*common, f"seed={seed}"], "ds"), seed,
                                        out / "downstream", log)
                    for key, row in ds.items():
                        downstream[(f"{_tag(u)}/{key}", seed)] = row
        from fedsim.stats import mean_std

        for u in fractions:
            table = []
            for key, label, _ in [("random", "random init (no federation)", None), *rows_def]:
                name = f"{_tag(u)}/{key}"
                r = rows.get(name, {"mean": {}, "std": {}})
                # the same Θ on the test cells some silo trains on / on those no silo holds
                union = " / ".join(fmt(r["mean"].get(f"foundation_accuracy_{side}"),
                                       r["std"].get(f"foundation_accuracy_{side}")) for side in ("in_union", "out_of_union"))
                cells = [label, fmt(r["mean"].get("foundation_accuracy"), r["std"].get("foundation_accuracy")),
                         union if r["mean"] else "",
                         fmt(r["mean"].get("grad_steps_per_round"), r["std"].get("grad_steps_per_round"), ".0f")
                         if r["mean"] else ""]
                ds_stats = {}
                for metric in ("dice", "miou", "jaccard", "accuracy"):
                    m, s = mean_std([downstream.get((name, seed), {}).get(metric) for seed in seeds])
                    ds_stats[metric] = (m, s)
                    cells.append(fmt(m, s))
                    if metric == "dice":  # paired by seed with random init (same fine-tune seed and data)
                        rand = f"{_tag(u)}/random"
                        d = [downstream[(name, sd)]["dice"] - downstream[(rand, sd)]["dice"] for sd in seeds
                             if key != "random" and (name, sd) in downstream and (rand, sd) in downstream]
                        cells.append(fmt(*mean_std(d)) if d else "")
                cells += [f"{r['mean']['mb_per_round']:.2f}" if r["mean"].get("mb_per_round") is not None else "",
                          f"{r['mean']['wall_time_s']:.0f}" if r["mean"].get("wall_time_s") is not None else "",
                          f"{PAPER_FOUNDATION[key]:.3f}" if key in PAPER_FOUNDATION else ""]
                table.append(cells)
                results.setdefault("downstream", {})[name] = {k: {"mean": m, "std": s} for k, (m, s) in ds_stats.items()}
            print_table(f"FedEFM on synthetic data — 4-silo ring, {100 * u:.0f}% unseen labels, {rounds} rounds; "
                        f"mean ± std over seeds {','.join(map(str, seeds))} (downstream fine-tuned with the same seed)",
                        ["row", "Θ test acc", "Θ in-union / out-of-union", "grad steps/silo/round", "Dice", "Δ Dice vs random", "mIoU", "Jaccard", "tube acc",
                         "MB/round", "wall s", "paper Θ acc*"], table)
            print("  * the FedEFM paper on its private endovascular data: a reference, not comparable")
        focus = 0.5 if 0.5 in fractions else fractions[0]
        picked = [r for key in ("fedefm_dfl", "fedavg", "released", "fedavg_budget")
                  for r in [_sweep_row(runs, f"{_tag(focus)}/{key}", dict((k, lbl) for k, lbl, _ in rows_def)[key])]
                  if r]
        png = plot_rows(picked, out / "fedefm_by_round.png",
                        f"Θ test accuracy by round, {100 * focus:.0f}% unseen labels (mean ± std over seeds)")
        log(f"figure: {png}")

    if "emd" in sections:
        table = []
        for key, label, _ in EMD_ROWS:
            r = rows[f"u100/{key}"]
            table.append([label, fmt(r["mean"].get("foundation_accuracy"), r["std"].get("foundation_accuracy")),
                          fmt(r["mean"].get("wall_time_s"), r["std"].get("wall_time_s"), ".0f")])
        print_table(f"EMD ablation: FedEFM (DFL), 100% unseen labels, mean ± std over {len(seeds)} seeds",
                    ["w_ij", "Θ test acc", "wall s"], table)

    if "cost" in sections:
        results["cost"] = emd_cost(args, common, out, log, make_config, emd_round_share, distill_step_timing,
                                   print_table)

    (out / "fedefm_tables.json").write_text(json.dumps(results, indent=2, default=str))
    log(f"total {time.perf_counter() - t_start:.0f} s; numbers in {out}/fedefm_tables.json")
    return 0


def _sweep_row(runs, point: str, label: str) -> dict | None:
    """A collect() row for one point, relabelled for the figure."""
    from fedsim.sweep import collect

    mine = [r for r in runs if r.point.label == point]
    if not mine:
        return None
    row = collect(mine)[0]
    row["point"], row["label"] = "base", label
    return row


EMD_TARGET = 0.03  # the EMD's share of a FedEFM round, in the run and in CPU time


def emd_cost(args, common, out: Path, log, make_config, emd_round_share, distill_step_timing, print_table) -> dict:
    """The EMD's share of a FedEFM round, in-run (exact vs cvxpylayers, one seed, 2 rounds) and
    per step in CPU time (robust to a loaded machine)."""
    from fedsim.sweep import Point, execute, plan

    points = [Point(f"cost/{b}", ["algorithm=fedefm", "scenario=dfl", "rounds=2", f"emd.backend={b}",
                                  "train.eval_every=0"]) for b in ("exact", "cvxpylayers")]
    runs = plan(None, common, points, [0], out / "sweep", args.nproc)
    execute(runs, 1, log=log)
    cost = {}
    for run in runs:
        s = json.loads((run.run_dir / "summary.json").read_text())
        per_round, share = emd_round_share(s)
        cost[run.point.label.split("/")[1]] = {"round_s": s["round_time_s"][1], "emd_s_per_rank": per_round,
                                              "share": share}
    ex, cv = cost["exact"], cost["cvxpylayers"]
    print_table("EMD cost in one FedEFM round (round 1 of 2, in-run wall clock, EMD forward only)",
                ["backend", "round s", "EMD s per rank", "EMD share %"],
                [[b, f"{c['round_s']:.2f}", f"{c['emd_s_per_rank']:.2f}", f"{100 * c['share']:.1f}"]
                 for b, c in cost.items()] + [["cvxpylayers / exact", f"{cv['round_s'] / ex['round_s']:.1f}×", "", ""]])
    tcfg = make_config([*common, "algorithm=fedefm", "scenario=dfl"], "timing")
    log("timing single training steps (CPU time): plain CE, distillation with uniform / exact / cvxpylayers w_ij")
    t = distill_step_timing(tcfg, steps=10 if args.quick else 40, cvx_steps=2 if args.quick else 4)
    fe = tcfg.fedefm
    # one silo's round on a ring: it hosts 2 visitors, distils, and (hosted mix) averages weights
    silo_round = {b: 2 * fe.overseas_steps * t["plain"] + fe.distill_steps * t[b]
                  for b in ("uniform", "exact", "exact_detached", "cvxpylayers")}
    shares = {b: fe.distill_steps * max(t[b] - t["uniform"], 0.0) / silo_round[b]
              for b in ("exact", "exact_detached", "cvxpylayers")}
    print_table("Per step, CPU time, 1 thread: EMD forward + backward through w_ij",
                ["step", "CPU s/step", "EMD share of a silo's round %"],
                [["plain CE (overseas)", f"{t['plain']:.3f}", ""],
                 ["distill, uniform w_ij", f"{t['uniform']:.3f}", "0"],
                 ["distill, exact EMD", f"{t['exact']:.3f}", f"{100 * shares['exact']:.1f}"],
                 ["distill, exact EMD, grad=false", f"{t['exact_detached']:.3f}", f"{100 * shares['exact_detached']:.1f}"],
                 ["distill, cvxpylayers", f"{t['cvxpylayers']:.3f}", f"{100 * shares['cvxpylayers']:.1f}"],
                 ["round cvxpylayers / exact", f"{silo_round['cvxpylayers'] / silo_round['exact']:.1f}×", ""]])
    line = (f"CPU-time estimate: exact EMD (fwd+bwd) {100 * shares['exact']:.1f}% of a silo's FedEFM round "
            f"({'meets' if shares['exact'] <= EMD_TARGET else 'MISSES'} ≤ {100 * EMD_TARGET:g}%); in-run (forward, "
            f"wall clock) {100 * ex['share']:.1f}% ({'meets' if ex['share'] <= EMD_TARGET else 'MISSES'})")
    print(line)
    if getattr(args, "rec", None) is not None:
        args.rec.note(line)
    return {"in_run": cost, "cpu_step": t, "cpu_share": shares}
