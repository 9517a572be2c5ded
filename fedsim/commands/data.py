"""``fedsim data preview``: a PNG grid of synthetic images per domain and the per-silo partition table."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="inspect the synthetic data and partitions",
                              description="Inspect the synthetic endovascular X-ray data and the silo partitions.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    v = dsub.add_parser(
        "preview", help="write a grid of images (masks overlaid) per domain and print the partition table",
        description="Write a PNG grid of generated images per domain (raw and with catheter/guidewire masks "
                    "overlaid) and print how the configured partition spreads domains and classes over silos.")
    v.add_argument("--domains", nargs="+", metavar="DOMAIN",
                   help="domains to show (default: human animal phantom simulation)")
    v.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    v.add_argument("--per-domain", type=int, default=6, help="images per domain (default 6)")
    v.add_argument("--seed", type=int, default=None, help="seed of the images and of the partition (default: the "
                   "config's seed, 0 for the embedded default)")
    v.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    v.add_argument("--no-masks", action="store_true", help="do not add the mask-overlay rows")
    part = v.add_argument_group("partition table")
    part.add_argument("--config", metavar="YAML", help="the experiment whose partition to show (default: the embedded "
                      "default that `fedsim run` runs without CONFIG); the options below override its data: section")
    part.add_argument("--silos", type=int, default=None, help="number of silos (default: the config's topology)")
    part.add_argument("--partition", choices=["domain", "iid", "dirichlet", "quantity", "attribute"],
                      help="partition scheme (default: domain)")
    part.add_argument("--samples-per-silo", type=int, help="synthetic samples per silo (default: the config's)")
    part.add_argument("--unseen-fraction", type=float, help="share of the 6 classes each silo never sees (0..1)")
    part.add_argument("--alpha", type=float, dest="dirichlet_alpha", help="Dirichlet alpha (label skew)")
    part.add_argument("--quantity-skew", type=float, help="silo-size skew exponent (0 = equal)")
    part.add_argument("--attribute-skew", type=float, help="age-like attribute skew strength (0 = none)")
    part.add_argument("--label-noise", type=float, help="symmetric label noise rate mu")
    part.add_argument("--no-table", action="store_true", help="skip the partition table")
    v.set_defaults(handler=preview)


def _data_config(args: argparse.Namespace):
    """(the data section, the silo count, the seed) the partition table shows: those of the run
    ``fedsim run [CONFIG]`` would make — the embedded default without --config — with the
    command line's overrides on top."""
    import dataclasses

    from fedsim.config import DEFAULT_CONFIG, load_config
    from fedsim.data import DataConfig
    from fedsim.topology import resolve_topology

    run = load_config(args.config or DEFAULT_CONFIG)
    base = dataclasses.asdict(run.data)
    for key in ("partition", "samples_per_silo", "unseen_fraction", "dirichlet_alpha", "quantity_skew",
                "attribute_skew", "label_noise"):
        val = getattr(args, key)
        if val is not None:
            base[key] = val
    silos = args.silos if args.silos is not None else resolve_topology(run.topology).num_silos
    return DataConfig.from_dict(base), silos, run.seed if args.seed is None else args.seed


def preview(args: argparse.Namespace) -> int:
    from fedsim.data import CLASS_NAMES, DOMAINS
    from fedsim.errors import DataError

    if args.domains:
        bad = [d for d in args.domains if d not in DOMAINS]
        if bad:
            raise DataError(f"unknown domain(s) {', '.join(bad)}; choose from {', '.join(DOMAINS)}")
    if args.size < 16 or args.per_domain < 1:
        raise DataError("--size must be >= 16 and --per-domain >= 1")
    if args.silos is not None and args.silos < 1:
        raise DataError("--silos must be >= 1")
    cfg, silos, seed = _data_config(args)  # validate before the slow part

    from fedsim.data import load_federated
    from fedsim.data.preview import save_preview
    from fedsim.ui import console

    con = console()
    out = save_preview(args.out, args.domains, args.size, args.per_domain, seed, masks=not args.no_masks)
    con.print(f"wrote {out} ({len(args.domains or DOMAINS)} domains x {args.per_domain} images, "
                  f"{args.size}x{args.size})")
    if not args.no_table:
        fd = load_federated(cfg, silos, seed)
        con.print(f"partition={cfg.partition} silos={silos} seed={seed} unseen_fraction={cfg.unseen_fraction} "
                      f"dirichlet_alpha={cfg.dirichlet_alpha} quantity_skew={cfg.quantity_skew} "
                      f"attribute_skew={cfg.attribute_skew} label_noise={cfg.label_noise}")
        con.print(fd.summary_table(title="samples per silo"))
        con.print("classes: " + ", ".join(f"c{i} {n}" for i, n in enumerate(fd.class_names or CLASS_NAMES)))
    return 0
