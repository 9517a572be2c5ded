"""``fedsim downstream``: fine-tune segmentation and tube-position classification from foundation
models (and random initialisation) on one downstream data set and print the comparison table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Fine-tune a U-Net (encoder initialised from each foundation.pt) on catheter/guidewire
segmentation and a classifier (backbone from each foundation.pt) on the tube-position label,
all on the same generated downstream set, once per fine-tune seed (--seeds: decoder/head
initialisation and batch order, the same for every row), and print Dice (catheter, guidewire,
mean), mIoU, Jaccard and accuracy per initialization: mean ± std over the seeds, and Δ, the mean ±
std of the seed-by-seed difference to random initialization (with 3 seeds, a Δ smaller than about
2.5× its ± is within the noise: the 95% t-interval).

  fedsim downstream --random --init FedAvg=runs/fedavg/foundation.pt --init FedEFM=runs/fedefm/foundation.pt

Segmentation is few-shot (--seg-train-samples images): the decoder first trains on the frozen
encoder (--seg-warmup-steps), then the whole U-Net (--seg-steps, encoder at --seg-encoder-lr);
docs/downstream.md and its records have the measurements behind these defaults. --split val scores on a quarter
of the training images held out (for choosing a recipe; never choose on the test split).

The model settings default to the `model:` section of the config.yaml next to the first
foundation.pt (as written by `fedsim run`), else the built-in default; override with --model-set.
A plug-in model named there (`model.name: 'pkg.mod:fn'`) is code: it is used only when given with
--model-set too. Foundation files are read as data only (tensors); one holding anything else is
refused."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from fedsim.data import DOMAINS
    from fedsim.downstream import SPLITS, TASKS, DownstreamConfig

    d = DownstreamConfig()
    p = subparsers.add_parser("downstream", help="fine-tune from foundation models and compare initializations",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", action="append", default=[], metavar="NAME=PATH",
                   help="a foundation state dict to start from (repeatable); NAME defaults to the run folder name")
    p.add_argument("--random", action="store_true",
                   help="add a row from random initialization (implied when no --init is given)")
    p.add_argument("--domain", choices=[*DOMAINS, "all"], default=d.domain or "all",
                   help=f"downstream domain (default {d.domain or 'all'}; 'all' cycles the four domains)")
    p.add_argument("--task", dest="tasks", action="append", choices=TASKS,
                   help="run only this task (repeatable; default both)")
    p.add_argument("--seeds", default=None, metavar="S,S,...",
                   help=f"fine-tune seeds: decoder/head init and batch order (default {','.join(map(str, d.seeds))})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the downstream images (default {d.seed})")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="score on the test set (default) or on held-out training images (val)")
    p.add_argument("--train-samples", type=int, default=None,
                   help=f"generated training images; the classifier trains on all of them (default {d.train_samples})")
    p.add_argument("--test-samples", type=int, default=None, help=f"test images (default {d.test_samples})")
    seg = p.add_argument_group("segmentation")
    seg.add_argument("--seg-train-samples", type=int, default=None,
                     help=f"training images of the U-Net, the first of --train-samples (default {d.seg_train_samples})")
    seg.add_argument("--seg-warmup-steps", type=int, default=None,
                     help=f"decoder-only steps on the frozen encoder (default {d.seg_warmup_steps})")
    seg.add_argument("--seg-steps", type=int, default=None,
                     help=f"then steps of the whole U-Net (default {d.seg_steps})")
    seg.add_argument("--seg-lr", type=float, default=None, help=f"decoder Adam learning rate (default {d.seg_lr:g})")
    seg.add_argument("--seg-encoder-lr", type=float, default=None,
                     help=f"encoder learning rate after the warm-up, 0 = frozen (default {d.seg_encoder_lr:g})")
    seg.add_argument("--seg-schedule", choices=["constant", "cosine"], default=None,
                     help=f"learning-rate schedule over the whole fine-tune (default {d.seg_schedule})")
    seg.add_argument("--seg-image-size", type=int, default=None, metavar="N",
                     help=f"segmentation image size (default {d.seg_image_size}; 0 = --image-size)")
    seg.add_argument("--seg-batch-size", type=int, default=None, help=f"batch size (default {d.seg_batch_size})")
    seg.add_argument("--raw-branch", dest="seg_raw_branch", action="store_true", default=None,
                     help="give the decoder its full-resolution conv on the input pixels (off by default: "
                          "with it random init segments nearly as well as a foundation and the gap is within the noise)")
    cls = p.add_argument_group("classification")
    steps = cls.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None, help=f"classifier optimizer steps (default {d.steps})")
    steps.add_argument("--epochs", type=int, default=None, help="passes over the training set instead of --steps")
    cls.add_argument("--batch-size", type=int, default=None, help=f"classifier batch size (default {d.batch_size})")
    cls.add_argument("--lr", type=float, default=None, help=f"classifier Adam learning rate (default {d.lr:g})")
    p.add_argument("--image-size", type=int, default=None,
                   help="image size of the classification set, and of the segmentation set when "
                        "--seg-image-size is 0 (default: data.image_size of the run's config.yaml, else 64)")
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="model setting, e.g. --model-set name=resnet10 --model-set width=32")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="fine-tune in N processes of one CPU thread each (default: one per usable core; "
                        "the scores do not depend on N)")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON to OUT")
    p.set_defaults(handler=handle)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; anything else is a one-line :class:`ConfigError`."""
    from fedsim.errors import ConfigError

    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds expects comma-separated integers, e.g. --seeds 0,1,2; got {text!r}")
    return seeds


def parse_inits(specs: list[str], random: bool) -> dict[str, str | None]:
    from fedsim.errors import ConfigError

    inits: dict[str, str | None] = {}
    if random or not specs:
        inits["random"] = None
    for spec in specs:
        if "=" in spec:
            name, path = spec.split("=", 1)
            name, path = name.strip(), path.strip()
        else:
            path = spec.strip()
            name = Path(path).parent.name or Path(path).stem
        if not name or not path:
            raise ConfigError(f"--init expects NAME=PATH (e.g. --init FedEFM=runs/x/foundation.pt), got {spec!r}")
        if name in inits:
            raise ConfigError(f"--init: the name {name!r} is used twice")
        inits[name] = path
    return inits


def _run_config(path: str | None) -> dict:
    """The config.yaml written by ``fedsim run`` next to a foundation.pt, or {}."""
    if not path:
        return {}
    import yaml

    cfg = Path(path).parent / "config.yaml"
    if not cfg.is_file():
        return {}
    try:
        doc = yaml.safe_load(cfg.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def model_config(args: argparse.Namespace, first_path: str | None):
    from fedsim.config import parse_override
    from fedsim.errors import ConfigError
    from fedsim.models import ModelConfig
    from fedsim.plugins import is_import_path

    section = _run_config(first_path).get("model")
    base = dict(section) if isinstance(section, dict) else {}
    # a plug-in is code: one named by the config.yaml of a run folder (which may come from anyone)
    # is not imported unless the user names it here too
    for key, names in (("name", [base.get("name")]), ("per_silo", base.get("per_silo") or [])):
        plugin = next((n for n in names if is_import_path(n)), None)
        if plugin is not None and not any(t.split("=", 1)[0].strip() == key for t in args.model_set):
            raise ConfigError(f"{Path(first_path).parent / 'config.yaml'}: model.{key} names the plug-in {plugin!r}, "
                              f"which is code; fedsim downstream imports no code a run folder names — if you trust "
                              f"it, give it yourself: --model-set {key}={plugin if key == 'name' else names}")
    for text in args.model_set:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise ConfigError(f"--model-set expects KEY=VALUE with a model key (e.g. width=32), got {text!r}")
        base[keys[0]] = value
    return ModelConfig.from_dict(base)


def handle(args: argparse.Namespace) -> int:
    from fedsim.downstream import DownstreamConfig, compare_initializations, downstream_table, rows_to_json
    from fedsim.ui import console

    inits = parse_inits(args.init, args.random)
    first = next((p for p in inits.values() if p is not None), None)
    mcfg = model_config(args, first)
    keys = ("steps", "epochs", "train_samples", "test_samples", "batch_size", "lr", "seg_train_samples",
            "seg_warmup_steps", "seg_steps", "seg_lr", "seg_encoder_lr", "seg_batch_size", "seg_raw_branch",
            "seg_schedule", "seg_image_size", "workers")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if overrides.get("seg_image_size") == 0:
        overrides["seg_image_size"] = None
    if args.seeds is not None:
        overrides["seeds"] = parse_seeds(args.seeds)
    ds = DownstreamConfig.from_dict({**overrides, "seed": args.seed,
                                     "domain": None if args.domain == "all" else args.domain,
                                     **({"tasks": list(dict.fromkeys(args.tasks))} if args.tasks else {})})
    image_size = args.image_size
    if image_size is None:
        data = _run_config(first).get("data")
        image_size = int(data.get("image_size", 64)) if isinstance(data, dict) else 64
    status = console(stderr=True)
    rows = compare_initializations(
        inits, mcfg, ds, image_size, args.seed, split=args.split,
        progress=lambda text: status.print(f"[dim]fine-tuning {text} …[/dim]"))
    console().print(downstream_table(rows))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows_to_json(rows), indent=2))
    return 0
