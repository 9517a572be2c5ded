"""``fedsim downstream``: fine-tune segmentation and tube-position classification from foundation
models (and random initialisation) on one downstream data set and print the comparison table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Fine-tune a U-Net (encoder initialised from each foundation.pt) on catheter/guidewire
segmentation and a classifier (backbone from each foundation.pt) on the tube-position label,
all on the same generated downstream set with the same seed, and print Dice (catheter,
guidewire, mean), mIoU, Jaccard and accuracy per initialization.

  fedsim downstream --random --init FedAvg=runs/fedavg/foundation.pt --init FedEFM=runs/fedefm/foundation.pt

The model settings default to the `model:` section of the config.yaml next to the first
foundation.pt (as written by `fedsim run`), else the built-in default; override with --model-set."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from fedsim.data import DOMAINS
    from fedsim.downstream import TASKS, DownstreamConfig

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
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None, help=f"optimizer steps per task (default {d.steps})")
    steps.add_argument("--epochs", type=int, default=None, help="passes over the training set instead of --steps")
    p.add_argument("--train-samples", type=int, default=None, help=f"training images (default {d.train_samples})")
    p.add_argument("--test-samples", type=int, default=None, help=f"test images (default {d.test_samples})")
    p.add_argument("--batch-size", type=int, default=None, help=f"batch size (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {d.lr:g})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"data, head/decoder init and batch-order seed (default {d.seed})")
    p.add_argument("--image-size", type=int, default=None,
                   help="image size (default: data.image_size of the run's config.yaml, else 64)")
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="model setting, e.g. --model-set name=resnet10 --model-set width=32")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON to OUT")
    p.set_defaults(handler=handle)


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

    section = _run_config(first_path).get("model")
    base = dict(section) if isinstance(section, dict) else {}
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
    overrides = {k: getattr(args, k) for k in ("steps", "epochs", "train_samples", "test_samples", "batch_size", "lr")
                 if getattr(args, k) is not None}
    ds = DownstreamConfig.from_dict({**overrides, "seed": args.seed,
                                     "domain": None if args.domain == "all" else args.domain,
                                     **({"tasks": list(dict.fromkeys(args.tasks))} if args.tasks else {})})
    image_size = args.image_size
    if image_size is None:
        data = _run_config(first).get("data")
        image_size = int(data.get("image_size", 64)) if isinstance(data, dict) else 64
    status = console(stderr=True)
    rows = compare_initializations(
        inits, mcfg, ds, image_size, args.seed,
        progress=lambda name: status.print(f"[dim]fine-tuning from {name} …[/dim]"))
    console().print(downstream_table(rows))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows_to_json(rows), indent=2))
    return 0
