"""``fedsim list [KIND]``: what a config or a command can name, read from where it is defined.

Each catalogue comes from its registry or constant (``fedsim.algorithms.REGISTRY``,
``fedsim.models.MODEL_NAMES``, the shipped topology files, ``fedsim.topology.MAKE_KINDS``, …) or,
where the allowed values live only in a config key's type, from that type's ``Literal`` choices
(``emd.backend``, ``compression.kind``, ``privacy.mode``, ``data.partition``, ``scenario``,
``aggregation``). Each
catalogue's source is imported only when it is listed: several pull in torchvision or the LP
solvers, which ``fedsim --help`` should not wait for.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

Entries = list[tuple[str, str]]  # (what to write in the config, a few words about it)


@dataclass(frozen=True)
class Catalogue:
    """One kind of name: where a user writes it and how to read the names."""

    kind: str  # the KIND of `fedsim list KIND`
    title: str
    where: str  # the config keys or commands that take these names
    entries: Callable[[], Entries]


def _key_choices(module: str, cls: str, key: str) -> Entries:
    """The ``Literal`` choices of a settings dataclass's field."""
    import importlib

    from fedsim.settings import choices, field_hints

    return [(str(c), "") for c in choices(field_hints(getattr(importlib.import_module(module), cls))[key])]


def _algorithms() -> Entries:
    from fedsim.algorithms import algorithm_class, algorithm_names

    out = []
    for name in algorithm_names():
        algo = algorithm_class(name)
        scenarios = dict.fromkeys((algo.natural_scenario, *algo.scenarios))
        out.append((name, f"{algo.title}; default scenario {algo.natural_scenario}; scenarios "
                          f"{', '.join(scenarios)}; tasks {', '.join(algo.tasks)}; "
                          f"privacy {', '.join(('none', *algo.privacy_modes))}"))
    return out


def _models() -> Entries:
    from fedsim.models import MODEL_NAMES

    return [(name, "") for name in MODEL_NAMES]


def _topologies() -> Entries:
    from fedsim.topology import load_topology, shipped_topologies

    out = []
    for name, path in sorted(shipped_topologies().items()):
        topo = load_topology(path)
        out.append((name, f"{topo.num_silos} silos, {len(topo.edges)} {'directed' if topo.directed else 'undirected'} "
                          "edges"))
    return out


def _generators() -> Entries:
    from fedsim.topology import MAKE_KINDS

    return [(f"{kind}:N", "") for kind in MAKE_KINDS]


def _data_kinds() -> Entries:
    from fedsim.data import KINDS

    return [(kind, "") for kind in KINDS]


def _medmnist() -> Entries:
    from fedsim.config.medmnist import FLAGS

    return [(flag, f"{info.task}, {len(info.labels)} classes, {'RGB' if info.channels == 3 else 'grayscale'}")
            for flag, info in FLAGS.items()]


def _domains() -> Entries:
    from fedsim.data import DOMAINS

    return [(name, "") for name in DOMAINS]


def _overlays() -> Entries:
    from fedsim.netmodel.overlays import EXTRA_KINDS, OVERLAY_KINDS

    return [(kind, "") for kind in OVERLAY_KINDS] + [(kind, "not in cycle-time's default set") for kind in EXTRA_KINDS]


CATALOGUES: tuple[Catalogue, ...] = (
    Catalogue("algorithms", "Algorithms", "`algorithm`, `compare_with` (or your own class as `module:Class`, its "
              "settings in `algorithm_args`: docs/extending.md, \"Write an algorithm\")", _algorithms),
    Catalogue("aggregations", "Aggregation rules", "`aggregation` (the CFL server, DFL mixes and Θ; docs/algorithms.md, "
              "\"Robust aggregation\")", lambda: _key_choices("fedsim.config", "ExperimentConfig", "aggregation")),
    Catalogue("scenarios", "Scenarios", "`scenario` (null: the algorithm's default)",
              lambda: _key_choices("fedsim.config", "ExperimentConfig", "scenario")),
    Catalogue("models", "Built-in models", "`model.name`, `model.per_silo`, `fminit.teacher.name` (or a MONAI "
              "network `monai.NAME`, e.g. `monai.DenseNet121`, or a plug-in `package.module:factory`)", _models),
    Catalogue("topologies", "Shipped topologies", "`topology`, `fedsim topology show|validate NAME`", _topologies),
    Catalogue("generators", "Topology generators", "`topology: KIND:N`, `fedsim topology make KIND N`", _generators),
    Catalogue("data", "Data kinds", "`data.kind`", _data_kinds),
    Catalogue("medmnist", "MedMNIST datasets", "`data.flag` with `data.kind: medmnist`", _medmnist),
    Catalogue("partitions", "Partitioners", "`data.partition`", lambda: _key_choices("fedsim.data", "DataConfig",
                                                                                      "partition")),
    Catalogue("domains", "Image domains", "`data.domains`, `downstream.domain`", _domains),
    Catalogue("emd", "EMD backends", "`emd.backend`", lambda: _key_choices("fedsim.emd", "EMDConfig", "backend")),
    Catalogue("codecs", "Compression codecs", "`compression.kind`",
              lambda: _key_choices("fedsim.compression", "CompressionConfig", "kind")),
    Catalogue("privacy", "Privacy modes", "`privacy.mode`",
              lambda: _key_choices("fedsim.privacy", "PrivacyConfig", "mode")),
    Catalogue("overlays", "Overlay kinds", "`fedsim topology overlay FILE KIND`, `fedsim topology cycle-time "
              "--overlays`", _overlays),
)
KINDS = tuple(c.kind for c in CATALOGUES)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list what a config can name: algorithms, models, topologies, ...",
                       description="Print, as markdown, each catalogue of names a config key or a command "
                                   "accepts, read from where it is defined. `fedsim config --reference` "
                                   "explains every config key.")
    p.add_argument("kind", nargs="?", choices=KINDS, metavar="KIND",
                   help=f"only this catalogue: {', '.join(KINDS)} (default: all)")
    p.set_defaults(handler=main)


def render(catalogue: Catalogue) -> str:
    """One catalogue as markdown: a heading (its KIND), where its names go, one bullet per name."""
    lines = [f"## {catalogue.kind}", "", f"{catalogue.title}: name one in {catalogue.where}.", ""]
    lines += [f"- `{name}`" + (f" — {about}" if about else "") for name, about in catalogue.entries()]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    chosen = [c for c in CATALOGUES if args.kind in (None, c.kind)]
    print("\n".join(render(c) for c in chosen), end="")
    return 0
