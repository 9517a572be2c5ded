"""``fedsim run``: train on this machine (ranks spawned here) or as one rank of a torchrun job."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = """\
Run an experiment. Without CONFIG the embedded default runs (fedsim/default.yaml: FedEFM on a
4-silo ring with unseen domains and labels, FedAvg on the same data for comparison, then
downstream fine-tuning from each foundation and from random weights).
On one machine this process is rank 0 and starts the others (gloo on the CPU, NCCL on GPUs); under
`torchrun ... -m fedsim run [CONFIG]` this process is one rank of the job.
Results go to OUTPUT_DIR/NAME/: config.yaml, metrics/silo_<i>.jsonl, summary.json,
summary.csv, foundation.pt and checkpoints/ (one file per rank after every round, or every
checkpoint.every rounds and the last; the last two kept; continue with --resume). Evaluation: every silo's model on the test set every
train.eval_every rounds (0: only the last), on all silos or a seeded sample (train.eval_silos: all |
N | auto — all up to 50 silos, then a tenth of them, 10 to 50), Θ always; on synthetic data Θ
also on the test cells (domain, class) some silo trains on and on those no silo holds (in union /
out of union). data.label: source makes the class the image's domain. Simulated faults (silos
that drop out, partial participation, stragglers, link failures, a silo that trains on corrupted
labels or sends noised weights — faults.corrupt: [{silo, kind: random_labels | label_noise |
weight_noise, level, start, end}]) are the config's faults: section. A rank that dies (kill -9,
OOM) or stalls past timeout_s is reported, never a hang; with --max-restarts N (or torchrun
--max-restarts=N) the ranks restart and the run continues from its last checkpoint by itself, and
with faults.on_crash: exclude the silos of a rank that crashed more than N times are left out
(ϑ = 0) while the others finish the run.
Your own data and model: data.kind folder (root/<silo>/images + labels.csv, any number of
classes, RGB or grayscale, masks/ only for segmentation), torchvision (data.name, data.root;
downloads only with data.download: true) or python (data.factory: 'pkg.module:load' called as
load(num_silos=N, seed=S, **data.args)); model.name: 'pkg.module:make_net' called as
make_net(num_classes=C, in_channels=K, **model.args). Plug-ins are imported from the working
directory or PYTHONPATH: they are code, and the only way code enters a run — checkpoints and
init_from files are read as data only (tensors), and one holding anything else is refused.
Your own algorithm: algorithm: 'my_module:MyAlgorithm', a subclass of
fedsim.algorithms.base.Algorithm (its settings: a Settings dataclass attribute, filled from
algorithm_args:; also in compare_with); example: launch/plugin_example/run.sh --set
algorithm=my_algorithm:ServerMomentum (docs/extending.md, "Write an algorithm").
aggregation: mean | median | trimmed_mean | krum sets how the CFL server, the DFL mixes and Θ
combine weights (aggregation_trim, krum_f, krum_m; docs/algorithms.md, "Robust aggregation")."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an experiment (default: the embedded example)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from fedsim.algorithms import algorithm_names
    from fedsim.compression import CODEC_KINDS
    from fedsim.config import AGGREGATIONS, SCENARIOS
    from fedsim.privacy import PRIVACY_MODES

    p.add_argument("config", nargs="?", help="experiment YAML (keys: algorithm, scenario, topology, data, "
                   "model, train, fedefm, fedopt, scaffold, emd, net, faults, privacy, compression, rounds, seed, "
                   "output_dir, ...; algorithm: "
                   f"{' | '.join(algorithm_names())} | 'module:Class' (algorithm_args: its settings); "
                   f"aggregation: {' | '.join(AGGREGATIONS)}; scenario: {' | '.join(SCENARIOS)}; task: classification | "
                   "segmentation; init: random | pretrained | fm; data.kind: synthetic | folder | torchvision | "
                   "python (data.factory: 'pkg.module:load'); model.name: a built-in or 'pkg.module:make_net'; "
                   f"privacy.mode: {' | '.join(PRIVACY_MODES)} (sample: DP-SGD per silo with Opacus; client: "
                   "DP-FedAvg) with privacy.noise_multiplier or privacy.target_epsilon, privacy.max_grad_norm, "
                   "privacy.delta, and the ε spent in summary.json (epsilon); "
                   f"compression.kind: {' | '.join(CODEC_KINDS)} (compression.ratio for topk, "
                   "compression.error_feedback), coded bytes counted and clocked; fedopt.server_optimizer: adam | "
                   "yogi | adagrad | sgd (FedOpt's server step on the mean update); scaffold and fednova take "
                   "train.optimizer: sgd (scaffold: train.momentum: 0); faults.past_deadline: partial gives a "
                   "straggler past faults.deadline the local steps it finishes in time, which fednova normalises)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key by dotted path, e.g. --set rounds=3 --set data.root=/x")
    p.add_argument("--nproc", type=int, default=None,
                   help="ranks to spawn (default: one per GPU, else min(silos, CPU cores)); "
                        "silos are spread over ranks in contiguous blocks")
    p.add_argument("--resume", action="store_true",
                   help="continue OUTPUT_DIR/NAME from its last checkpointed round (read as data only: a file "
                        "holding anything but tensors and plain containers is refused)")
    p.add_argument("--max-restarts", type=int, default=0, metavar="N",
                   help="when a rank dies or stalls, restart the ranks and continue from the last checkpoint, "
                        "up to N times for the same silos (default 0: stop, exit 2, resumable); "
                        "faults.on_crash: exclude then leaves those silos out instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no results table")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from fedsim.experiment import finish, launch, prepare
    from fedsim.ui import console

    exp = prepare(args.config, args.overrides, nproc=args.nproc, resume=args.resume, max_restarts=args.max_restarts,
                  progress=None if args.quiet else console().print)
    result = launch(exp)
    if result is None:  # a torchrun rank other than 0: rank 0 finishes and reports
        return 0
    finish(result)
    if not args.quiet:
        print_summary(result.summary, result.run_dir)
        if len(result.summaries) > 1 or result.downstream:
            print_comparison(result.plans, result.summaries, result.downstream)
    return 0


def print_comparison(plans, summaries, rows) -> None:
    """The runs side by side (the main run, its baselines, random initialisation downstream)."""
    from fedsim.report import num, print_table
    from fedsim.report import pm as mean_pm

    by_init = {r["init"]: r for r in rows or []}
    seeds = ",".join(map(str, (rows or [{}])[0].get("seeds", [])))
    # Θ on the test cells some silo trains on and on those no silo holds, when the data split so
    union = any(s and s.get("test_samples_in_union") is not None for s in summaries)
    notes = ["MB/round: the mean over the rounds run, all silos"]
    if union:
        notes.append("in-union / out-of-union: Θ on the test cells (domain, class) some silo trains on / none holds")
    if rows:
        notes.append(f"downstream: mean ± std over fine-tune seeds {seeds}; Δ Dice: mean ± std of the seed-by-seed "
                     "difference to random init — with 3 seeds a Δ smaller than about 2.5× its ± is within the noise "
                     "(95% t-interval)")
    columns = ["initialisation", "Θ acc", *(("in-union", "out-of-union") if union else ()), "Dice",
               "Δ Dice", "mIoU", "Jaccard", "tube acc", "MB/round", "wall s"]

    def fmt(v, spec=".3f"):
        return num(v, spec, empty="")

    def pm(r, key, sign=""):
        return mean_pm(r.get(key), r.get(f"{key}_std"), sign=sign, empty="")

    table = []
    entries = [("random", None)] + [(p.label, s) for p, s in zip(plans, summaries)]
    for label, summ in entries:
        if summ is None and label not in by_init:
            continue
        r = by_init.get(label, {})
        split = [fmt(summ and summ.get(f"foundation_accuracy_{side}")) for side in ("in_union", "out_of_union")]
        table.append([label, fmt(summ and summ["foundation_accuracy"]), *(split if union else []), pm(r, "dice"),
                      pm(r, "dice_delta", "+"),
                      fmt(r.get("miou")), fmt(r.get("jaccard")), pm(r, "accuracy"),
                      fmt(summ and summ["bytes_per_round"] / 1e6, ".2f"), fmt(summ and summ["wall_time_s"], ".1f")])
    # one line a cell: a label or "m ± s" broken in two reads as two numbers
    print_table(columns, table, title="Foundation models compared (same data, same seed)", caption="; ".join(notes),
                no_wrap=True)


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    """The main run's table: every silo, then Θ (or the mean over silos), and what the run was."""
    from fedsim.report import SECTION, console_table
    from fedsim.ui import console

    con = console()
    columns = ["silo", "name", "model", "test Dice" if summary.get("metric") == "dice" else "test accuracy",
               "test loss", "train loss (last round)", "MB sent (last round)"]
    justify = ["right", "left", "left", "right", "right", "right", "right"]
    private = "privacy" in summary
    if private:
        columns.append(f"ε (δ = {summary['privacy']['delta']:g})")
        justify.append("right")
    part = summary.get("participation") or {}
    taken = part.get("rounds_taken_part", {})
    rounds = len(summary.get("round_time_s", [])) or summary["rounds"]
    faulty = any(n < rounds for n in taken.values()) or part.get("failed_silos")
    if faulty:  # faults: how many rounds each silo took part in, and why it sat the others out
        columns += ["rounds in", "absent (rounds)"]
        justify += ["right", "left"]

    def num(v):
        return "" if v is None else f"{v:.3f}"

    rows: list = []
    for s in summary["silos"]:
        cells = [str(s["silo"]), s["name"], s.get("model", ""), num(s["accuracy"]), num(s.get("test_loss")),
                 num(s["loss"]), f"{s['bytes_sent_last_round'] / 1e6:.2f}"]
        if private:
            cells.append(f"{s['epsilon']:.2f}" if s.get("epsilon") is not None else "")
        if faulty:
            why = part.get("absent_rounds", {}).get(str(s["silo"]), {})
            cells += [f"{taken.get(str(s['silo']), 0)}/{rounds}", ", ".join(f"{k} {v}" for k, v in why.items())]
        rows.append(cells)
    rows.append(SECTION)
    last_round = sum(s["bytes_sent_last_round"] for s in summary["silos"]) / 1e6
    pad = ([f"{summary['epsilon']:.2f} (max)"] if private and summary.get("epsilon") is not None else
           [""] if private else []) + (["", ""] if faulty else [])
    if summary["foundation_accuracy"] is None:  # no shared weights (see plan.forms_foundation): no Θ
        rows.append(["", "mean over silos (no Θ: no shared weights)", "", num(summary.get("mean_silo_accuracy")),
                     "", "", f"{last_round:.2f} (all)", *pad])
    else:  # Θ is never trained: its loss is on the test set
        rows.append(["Θ", "foundation (all-reduce)", "", num(summary["foundation_accuracy"]),
                     num(summary["foundation_loss"]), "", f"{last_round:.2f} (all)", *pad])
        if summary.get("test_samples_in_union") is not None:  # the same predictions, split (synthetic data)
            blank = [""] * (len(columns) - 4)
            for side in ("in_union", "out_of_union"):
                acc = summary.get(f"foundation_accuracy_{side}")
                rows.append(["", f"  {side.replace('_', ' ')} ({summary[f'test_samples_{side}']} test samples)", "",
                             "–" if acc is None else f"{acc:.3f}", *blank])
    table = console_table(columns, rows, justify=justify,
                          title=f"{summary['name']}: {summary['algorithm']} ({summary['scenario'].upper()}) on "
                                f"{summary['topology']}, {summary['num_silos']} silos on {summary['world_size']} rank(s)")
    con.print(table)
    rounds_run = len(summary.get("round_time_s", [])) or summary["rounds"]
    con.print(f"traffic: {summary['bytes_per_round'] / 1e6:.2f} MB per round, all silos, the mean over {rounds_run} "
              f"round(s); {summary['total_bytes'] / 1e6:.2f} MB in all")
    for lost in part.get("failed_silos", []):
        how = (f"crashed {lost['crashes']} time(s) on rank {lost['rank']} and was excluded"
               if lost["reason"] == "crashed" else "dropped out for good")
        name = next((x["name"] for x in summary["silos"] if x["silo"] == lost["silo"]), "")
        con.print(f"silo {lost['silo']} ({name}) {how} from round {lost['round']} "
                  "on (ϑ = 0 in every later aggregate and in Θ)")
    for c in part.get("corruption", []):  # faults.corrupt
        name = next((x["name"] for x in summary["silos"] if x["silo"] == c["silo"]), "")
        end = rounds - 1 if c["end"] is None else c["end"]
        con.print(f"silo {c['silo']} ({name}) corrupted: {c['kind']} {c['level']:g} in rounds {c['start']}..{end}")
    if private:
        p = summary["privacy"]
        con.print(f"privacy: {p['mode']}-level DP, σ = {p['noise_multiplier']:.3g}, clip {p['max_grad_norm']:g}"
                  f"{', target ε ' + format(p['target_epsilon'], 'g') if p['target_epsilon'] else ''} "
                  f"(Opacus RDP accountant)")
    if "compression" in summary:
        c = summary["compression"]
        con.print(f"compression: {c['kind']}{' ratio ' + format(c['ratio'], 'g') if c['ratio'] else ''}, "
                  f"error feedback {'on' if c['error_feedback'] else 'off'} (bytes are the coded sizes)")
    extra = summary.get("downstream")
    if extra:
        con.print(extra)
    attempts = summary.get("attempts", 1)
    over = f" over {attempts} attempts (restarts or --resume)" if attempts > 1 else ""
    con.print(f"wall time {summary['wall_time_s']:.1f} s{over} · results in {run_dir}/")
