"""Can the downstream benchmark see a good foundation? Random initialization vs a centrally
trained foundation Θ (CLL: every silo's data pooled), fine-tuned with the same recipe, data and
fine-tune seeds; Dice mean ± std over the seeds, the gap, and the gap in units of the
seed-to-seed std — all measured in this run.

    python benchmarks/downstream.py                     # the downstream defaults, test split
    python benchmarks/downstream.py --split val --grid --image-size 64  # the first selection (it ran at 64x64)
    python benchmarks/downstream.py --foundation runs/x/foundation.pt --seeds 0,1,2,3,4 --set seg_steps=100
    python benchmarks/downstream.py --probe             # what Θ looks at; a linear probe to the device mask
    python benchmarks/downstream.py --select            # the second recipe selection (validation, 8 seeds)

The foundation is trained once with ``fedsim run --set algorithm=fedavg --set scenario=cll
--set rounds=30 --set compare_with=[]`` (the default run's data pooled; ~20 s) and cached in
OUT/cll-foundation-r30 (OUT: runs/bench-downstream; ``--rounds N``: OUT/cll-foundation-rN).
``--split val`` scores on a quarter of the
downstream training images held out (the only split a recipe may be chosen on); ``test`` is the
report. The check printed at the end: Θ's mean Dice exceeds random init's by more than
the seed-to-seed standard deviation — the largest of the two rows' and of their seed-by-seed
difference — with the paired t statistic beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
FOUNDATION_SIZE = 64  # the foundation's (the default run's) image size; the tube-position set's too
FOUNDATION_RUN = ["algorithm=fedavg", "scenario=cll", "compare_with=[]", "downstream.enabled=false"]

# Recipes measured on the validation split (docs/downstream.md and its records); each is a set of downstream
# overrides on top of the defaults. "chosen" is the default recipe.
OLD = {"seg_raw_branch": True, "seg_train_samples": 192, "seg_batch_size": 16, "seg_warmup_steps": 0,
       "seg_steps": 60, "seg_lr": 2e-3, "seg_encoder_lr": 2e-3}
GRID: list[tuple[str, dict]] = [
    ("before the selection: 192 images, raw branch, 60 steps, one lr 2e-3", OLD),
    ("… 200 steps at lr 1e-2 (converged)", {**OLD, "seg_steps": 200, "seg_lr": 1e-2, "seg_encoder_lr": 1e-2}),
    ("… 16 images, 300 steps at lr 1e-2", {**OLD, "seg_train_samples": 16, "seg_batch_size": 8, "seg_steps": 300,
                                           "seg_lr": 1e-2, "seg_encoder_lr": 1e-2}),
    ("chosen recipe, but with the raw branch", {"seg_raw_branch": True}),
    ("no warm-up: 300 joint steps, encoder lr 1e-3", {"seg_warmup_steps": 0, "seg_steps": 300}),
    ("encoder frozen throughout (300 steps)", {"seg_encoder_lr": 0.0}),
    ("warm-up 150 + 150, encoder lr 1e-2 (= decoder)", {"seg_encoder_lr": 1e-2}),
    ("warm-up 150 + 150, encoder lr 1e-4", {"seg_encoder_lr": 1e-4}),
    ("chosen: 16 images, no raw branch, warm-up 150 + 150, encoder lr 1e-3", {}),
    ("chosen, batch size 16", {"seg_batch_size": 16}),
    ("chosen, 64 images", {"seg_train_samples": 64}),
]

# The second selection, fixed before it ran: the LP-FT recipe chosen first had
# passed the check on validation narrowly (+4.4 vs 4.2 with 5 seeds on 64 images) and failed it on
# the test split (+3.0 vs 4.4). These candidates are compared on a validation split twice as large
# (SELECT_DS: 512 generated training images -> 128 held out) with 8 fine-tune seeds; the rule is
# applied by `select()`, below, and the test split is only read for the recipe it returns.
SELECT_DS = {"train_samples": 512, "seeds": [0, 1, 2, 3, 4, 5, 6, 7]}
CANDIDATES: list[tuple[str, dict, bool]] = [  # (name, overrides, fine-tunes the encoder)
    ("LP-FT: warm-up 150 + 150, encoder lr 1e-3 (first choice)", {}, True),
    ("LP-FT: warm-up 150 + 150, encoder lr 1e-4", {"seg_encoder_lr": 1e-4}, True),
    ("LP-FT: warm-up 250 + 50, encoder lr 1e-3", {"seg_warmup_steps": 250, "seg_steps": 50}, True),
    ("decoder only, encoder frozen (300 steps)", {"seg_encoder_lr": 0.0}, False),
    # added after the four above all failed (every constant-rate run ends at a random point of a
    # noisy trajectory: is the seed-to-seed spread the schedule's?)
    ("LP-FT 150 + 150, encoder lr 1e-3, cosine schedule", {"seg_schedule": "cosine"}, True),
    ("LP-FT 250 + 50, encoder lr 1e-3, cosine schedule", {"seg_warmup_steps": 250, "seg_steps": 50,
                                                          "seg_schedule": "cosine"}, True),
    ("decoder only, encoder frozen, cosine schedule", {"seg_encoder_lr": 0.0, "seg_schedule": "cosine"}, False),
]


def noise_of(r: dict) -> float:
    """The seed-to-seed noise a gap must exceed: the largest of random init's, Θ's and the paired
    difference's standard deviation over the fine-tune seeds."""
    return max(r["random"][1], r["foundation"][1], r["paired_std"])


def select(results: list[dict], finetunes: list[bool]) -> int | None:
    """The rule (fixed in advance): a candidate passes when Θ's mean Dice exceeds random init's by
    more than :func:`noise_of`. Among passing candidates that fine-tune the encoder (the paper's
    framing), the one with the highest Θ Dice; if none, the best passing one that keeps it frozen;
    None if no candidate passes."""
    passing = [i for i, r in enumerate(results) if r["gap"] > noise_of(r)]
    for group in ([i for i in passing if finetunes[i]], passing):
        if group:
            return max(group, key=lambda i: results[i]["foundation"][0])
    return None


def foundation(out: Path, rounds: int) -> Path:
    """The centrally trained foundation (cached per number of rounds)."""
    name = f"cll-foundation-r{rounds}"
    run = out / name
    path = run / "foundation.pt"
    if path.is_file():
        return path
    cmd = [sys.executable, "-m", "fedsim", "run", "--quiet", "--set", f"output_dir={out}", "--set", f"name={name}",
           *[a for o in FOUNDATION_RUN for a in ("--set", o)], "--set", f"rounds={rounds}"]
    print("training the centralized foundation:", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return path


def what_theta_looks_at(path: Path, image_size: int) -> dict[str, float]:
    """Θ's foundation accuracy on the default run's kind of test set (every domain and class),
    and on the same scenes with the devices or the vessel tree left out of the pixels: does the
    foundation label depend on the catheter and guidewire?"""
    import torch

    from fedsim.data import DOMAINS, NUM_CLASSES, derive_seed, generate
    from fedsim.downstream import load_foundation_file
    from fedsim.models import build_model

    net = build_model(None, NUM_CLASSES)
    net.load_state_dict(load_foundation_file(path))
    net.eval()
    k = torch.arange(480)
    out = {}
    for erase in ((), ("devices",), ("vessels",)):
        d = generate(480, domains=k % len(DOMAINS), labels=(k // len(DOMAINS)) % NUM_CLASSES, image_size=image_size,
                     seed=derive_seed(0, 2), erase=erase)
        with torch.no_grad():
            out[" and ".join(erase) or "nothing"] = float((net(d.images).argmax(1) == d.labels).float().mean())
    return out


def linear_probe(path: Path | None, seed: int, image_size: int, steps: int = 300) -> dict[str, float]:
    """Dice (validation split) of a 1x1 conv from the frozen encoder's stages (upsampled to the
    input size, standardised) to the catheter/guidewire mask: what the features carry about the
    devices without any decoder to learn them."""
    import torch
    import torch.nn.functional as F

    from fedsim.downstream import DownstreamConfig, load_foundation_file, make_downstream_data
    from fedsim.downstream.train import index_batches
    from fedsim.losses import segmentation_loss
    from fedsim.metrics import segmentation_scores
    from fedsim.models import build_model

    data = make_downstream_data(DownstreamConfig(seg_image_size=image_size), image_size, 0, split="val")
    torch.manual_seed(seed)
    enc = build_model(None, 6)
    if path is not None:
        enc.load_state_dict(load_foundation_file(path))
    enc.eval()

    def feats(x):
        with torch.no_grad():
            return torch.cat([F.interpolate(f, size=x.shape[-2:], mode="bilinear", align_corners=False)
                              for f in enc.stages(x)], 1)

    ftr, fva = feats(data.train.images), feats(data.test.images)
    mu, sd = ftr.mean((0, 2, 3), keepdim=True), ftr.std((0, 2, 3), keepdim=True) + 1e-5
    ftr, fva = (ftr - mu) / sd, (fva - mu) / sd
    head = torch.nn.Conv2d(ftr.shape[1], 3, 1)
    opt = torch.optim.Adam(head.parameters(), 1e-2)
    for idx in index_batches(len(ftr), 16, steps, torch.Generator().manual_seed(seed)):
        loss = segmentation_loss(head(ftr[idx]), data.train.masks[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        s = segmentation_scores(head(fva).argmax(1), data.test.masks, 3)
    return {"dice": s["dice"], "dice_catheter": s["dice_per_class"][1], "dice_guidewire": s["dice_per_class"][2]}


def probe(path: Path, seeds: list[int], image_size: int) -> dict:
    from fedsim.stats import mean_std

    looks = what_theta_looks_at(path, FOUNDATION_SIZE)
    print("Θ foundation accuracy (test scenes, every domain and class) with … left out of the pixels: "
          + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in looks.items()))
    lp = {}
    for name, init in (("random encoder", None), ("centralized Θ", path)):
        runs = [linear_probe(init, s, image_size) for s in seeds]
        lp[name] = {k: mean_std([r[k] for r in runs]) for k in runs[0]}
        print(f"linear probe (1x1 conv on the frozen encoder's stages, validation split) from {name}: Dice "
              + ", ".join(f"{k} {pm(*v)}" for k, v in lp[name].items()))
    return {"erased": looks, "linear_probe": lp}


def parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def compare(path: Path, ds: dict, split: str, image_size: int) -> dict:
    from fedsim.downstream import DownstreamConfig, compare_initializations
    from fedsim.stats import mean_std

    cfg = DownstreamConfig.from_dict({**ds, "tasks": ["segmentation"]})
    rows = compare_initializations({"random": None, "centralized Θ": str(path)}, None, cfg, image_size, split=split)
    rnd, fnd = rows
    noise = math.sqrt((rnd["dice_std"] ** 2 + fnd["dice_std"] ** 2) / 2) if len(cfg.seeds) > 1 else math.nan
    gap = fnd["dice"] - rnd["dice"]
    _, paired_std = mean_std([f["dice"] - r["dice"] for f, r in zip(fnd["per_seed"], rnd["per_seed"])])
    return {"rows": rows, "random": (rnd["dice"], rnd["dice_std"]), "foundation": (fnd["dice"], fnd["dice_std"]),
            "gap": gap, "paired_std": paired_std, "noise": noise, "gap_in_std": gap / noise if noise > 0 else math.nan,
            "seconds": rnd["seconds"] + fnd["seconds"]}


def pm(m: float | None, s: float | None) -> str:
    """``m ± s`` in % (just ``m`` without a std)."""
    from fedsim.report import pm as cell

    return cell(m, s, ".1f", scale=100.0)


def main() -> int:
    import torch
    from rich.console import Console

    from benchmarks.common import Record, add_record_args
    from fedsim.downstream import downstream_table
    from fedsim.report import console_table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--foundation", help="a foundation.pt to use instead of training the CLL one")
    p.add_argument("--rounds", type=int, default=30, help="CLL rounds of the foundation (default 30)")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--seeds", default="0,1,2", help="fine-tune seeds (default 0,1,2)")
    p.add_argument("--data-seed", type=int, default=0, help="the downstream images (default 0)")
    p.add_argument("--image-size", type=int, default=None,
                   help="segmentation image size (default: downstream.seg_image_size, 96)")
    p.add_argument("--grid", action="store_true", help="every recipe of the first selection (docs/downstream.md; use with --split val)")
    p.add_argument("--only", action="append", type=int,
                   help="with --grid or --select: only recipe number N (repeatable)")
    p.add_argument("--select", action="store_true",
                   help="the candidates of the second recipe selection on a validation split of 128 images with "
                        "fine-tune seeds 0-7, and the rule's choice (implies --split val)")
    p.add_argument("--probe", action="store_true",
                   help="only the diagnostics: Θ's accuracy with devices / vessels erased, and a linear probe "
                        "from frozen random vs Θ features to the device mask")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a downstream setting, e.g. seg_steps=100")
    p.add_argument("--out", default=str(REPO / "runs" / "bench-downstream"))
    p.add_argument("--json", help="write the results here (default OUT/downstream-<split>.json)")
    add_record_args(p, "downstream")
    args = p.parse_args()
    variant = "select" if args.select else "probe" if args.probe else "grid" if args.grid else args.split
    rec = Record.from_args(args, "downstream", __file__, variant=variant)
    torch.set_num_threads(1)  # the recorded numbers were measured on one thread per process

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(args.foundation) if args.foundation else foundation(out, args.rounds)
    from fedsim.downstream import DownstreamConfig

    base = {"seeds": [int(s) for s in args.seeds.split(",")], "seed": args.data_seed,
            "seg_image_size": args.image_size or DownstreamConfig().seg_image_size}
    for text in args.set:
        key, _, value = text.partition("=")
        base[key.removeprefix("downstream.")] = parse_value(value)
    if args.probe:
        result = probe(path, base["seeds"], base["seg_image_size"])
        (out / "probe.json").write_text(json.dumps(result, indent=2))
        rec.write(result, body="```json\n" + json.dumps(result, indent=2) + "\n```")
        return 0
    recipes = GRID if args.grid else [("downstream defaults" + (f" + {' '.join(args.set)}" if args.set else ""), {})]
    if args.grid and args.only:
        recipes = [recipes[i - 1] for i in args.only]
    dest = Path(args.json) if args.json else out / f"downstream-{args.split}{'-grid' if args.grid else ''}.json"

    def key(r: dict) -> str:  # a measured candidate: its recipe, settings and foundation
        return json.dumps([r["recipe"], r.get("settings"), r.get("foundation_file")], sort_keys=True, default=str)

    previous: list[dict] = []
    done: dict[str, dict] = {}  # --select: candidates measured with this foundation and these settings
    if args.select:
        args.split, args.seeds = "val", ",".join(map(str, SELECT_DS["seeds"]))
        base.update(SELECT_DS)
        dest = Path(args.json) if args.json else out / "downstream-val-select.json"
        recipes = [(name, overrides) for name, overrides, _ in CANDIDATES]
        if args.only:
            recipes = [recipes[i - 1] for i in args.only]
        previous = json.loads(dest.read_text()) if dest.is_file() else []
        for name, overrides, _ in CANDIDATES:
            want = key({"recipe": name, "settings": {**base, **overrides}, "foundation_file": str(path)})
            hit = next((r for r in previous if key(r) == want), None)
            if hit is not None:
                done[name] = hit
    con = Console(width=180)
    results = []
    started = time.perf_counter()
    for name, overrides in recipes:
        if name in done:
            results.append(done[name])
            continue
        r = compare(path, {**base, **overrides}, args.split, FOUNDATION_SIZE)
        r.update(settings={**base, **overrides}, foundation_file=str(path), recipe=name, overrides=overrides)
        results.append(r)
        done[name] = r
        print(f"[{time.perf_counter() - started:5.0f}s] {name}: random {pm(*r['random'])}  Θ {pm(*r['foundation'])}  "
              f"gap {100 * r['gap']:+.1f} = {r['gap_in_std']:.1f} std", flush=True)
        if not args.grid:
            con.print(downstream_table(r["rows"]))

    columns = ["#", "recipe", "random", "centralized Θ", "gap", "paired gap", "gap / std", "gap > noise", "s"]
    table = console_table(columns, [
        [str(i), r["recipe"], pm(*r["random"]), pm(*r["foundation"]), f"{100 * r['gap']:+.1f}",
         pm(r["gap"], r["paired_std"]), f"{r['gap_in_std']:.1f}",
         f"{'yes' if r['gap'] > noise_of(r) else 'no'} ({100 * noise_of(r):.1f})", f"{r['seconds']:.0f}"]
        for i, r in enumerate(results, 1)], justify=["right", "left", *["right"] * 7],
        title=f"Downstream segmentation Dice (%), {args.split.upper()} split, fine-tune seeds {args.seeds}: "
              f"random init vs centralized Θ ({path})")
    con.print(table)
    rec.table(table)
    if args.select:
        # the rule over every candidate measured under these settings, --only or not
        measured = [(done[name], finetunes) for name, _, finetunes in CANDIDATES if name in done]
        chosen = select([r for r, _ in measured], [f for _, f in measured])
        line = "choice by the rule: " + (f"{measured[chosen][0]['recipe']}" if chosen is not None
                                         else "none passes; the first choice stays")
        print("  " + line)
        rec.note(line)
    if not args.grid and not args.select:
        r = results[0]
        n = len(base["seeds"])
        noise = noise_of(r)
        ok = r["gap"] > noise
        t = r["gap"] / (r["paired_std"] / math.sqrt(n)) if r["paired_std"] > 0 else math.nan
        line = (f"[{'holds' if ok else 'DOES NOT HOLD'}] centralized Θ beats random init on downstream Dice by more "
                f"than the seed-to-seed noise: gap {100 * r['gap']:+.1f} points vs std {100 * noise:.1f} (the largest "
                f"of random's {100 * r['random'][1]:.1f}, Θ's {100 * r['foundation'][1]:.1f} and the paired "
                f"difference's {100 * r['paired_std']:.1f}); paired t = {t:.1f} over {n} seeds")
        print("  " + line)
        rec.note(line)
    from fedsim.downstream import rows_to_json

    saved = [{**{k: v for k, v in r.items() if k != "rows"}, "rows": rows_to_json(r["rows"])} for r in results]
    ours = {key(r) for r in saved}  # --select: keep the candidates measured before under other settings
    saved = [r for r in previous if key(r) not in ours] + saved
    dest.write_text(json.dumps(saved, indent=2, default=str))
    print(f"wrote {dest}")
    rec.write(saved)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
