"""``fedsim topology validate|show|make`` (and the benchmarking commands cycle-time / overlay)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsim.topology import MAKE_KINDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topology", help="validate, show, make and benchmark topologies",
                       description="Work with topology files (YAML as in topologies/README.md, or GML networks).")
    tsub = p.add_subparsers(dest="topology_command", metavar="ACTION", required=True)

    v = tsub.add_parser("validate", help="check a topology file; exit 2 with every problem listed")
    v.add_argument("file", help="a topology YAML / GML file or a shipped name (gaia, ring-4, ...)")
    v.add_argument("--strongly-connected", action="store_true",
                   help="also require every silo to reach every other (DFL algorithms need it)")
    v.set_defaults(handler=validate)

    s = tsub.add_parser("show", help="silos, in/out neighbours and degrees; --png draws the graph")
    s.add_argument("file", help="a topology YAML / GML file or a shipped name (gaia, ring-4, ...)")
    s.add_argument("--png", metavar="OUT", help="draw the topology to this PNG")
    s.set_defaults(handler=show)

    m = tsub.add_parser("make", help=f"write a generated topology ({', '.join(MAKE_KINDS)})")
    m.add_argument("kind", choices=MAKE_KINDS)
    m.add_argument("n", type=int, help="number of silos")
    m.add_argument("--degree", type=int, default=3, help="random-regular: neighbours per silo")
    m.add_argument("--seed", type=int, default=0, help="random-regular: seed")
    m.add_argument("-o", "--out", help="output YAML (default: print to stdout)")
    m.set_defaults(handler=make)

    from fedsim.commands import topology_bench

    topology_bench.register_cycle_time(tsub)
    topology_bench.register_overlay(tsub)


def validate(args: argparse.Namespace) -> int:
    from fedsim.topology import load_topology

    topo = load_topology(args.file, require_strongly_connected=args.strongly_connected)
    kind = "directed" if topo.directed else "undirected"
    print(f"{args.file}: OK — {topo.name}: {topo.num_silos} silos, {len(topo.edges)} {kind} edges, "
          f"{'strongly connected' if topo.is_strongly_connected() else 'NOT strongly connected'}")
    return 0


def show(args: argparse.Namespace) -> int:
    from fedsim.report import print_table
    from fedsim.topology import load_topology

    topo = load_topology(args.file)
    print_table(["silo", "name", "in-neighbours", "out-neighbours", "in", "out"],
                [[str(s.id), s.name, _ids(topo.in_neighbours(s.id)), _ids(topo.out_neighbours(s.id)),
                  str(topo.in_degree(s.id)), str(topo.out_degree(s.id))] for s in topo.silos],
                justify=["right", "left", "left", "left", "right", "right"],
                title=f"{topo.name} ({topo.num_silos} silos, {len(topo.arcs)} arcs, "
                      f"{'directed' if topo.directed else 'undirected'})")
    if args.png:
        draw(topo, args.png)
        print(f"drawn to {args.png}")
    return 0


def _ids(ids: list[int], limit: int = 12) -> str:
    text = " ".join(map(str, ids[:limit]))
    return text + (f" … (+{len(ids) - limit})" if len(ids) > limit else "")


def draw(topo, out: str | Path) -> None:
    """Draw the topology (silo names as labels, arrows when directed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    g = topo.to_networkx()
    n = topo.num_silos
    pos = nx.circular_layout(g) if n <= 12 else nx.kamada_kawai_layout(g)
    fig, ax = plt.subplots(figsize=(7, 7) if n <= 30 else (11, 11))
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=topo.directed, alpha=0.6)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color="#4c72b0", node_size=300 if n <= 30 else 80)
    labels = {s.id: (s.name if n <= 30 else str(s.id)) for s in topo.silos}
    nx.draw_networkx_labels(g, pos, labels, ax=ax, font_size=8 if n <= 30 else 6)
    ax.set_title(f"{topo.name}: {n} silos")
    ax.axis("off")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


def make(args: argparse.Namespace) -> int:
    from fedsim.topology import make_topology

    topo = make_topology(args.kind, args.n, degree=args.degree, seed=args.seed)
    if args.out:
        topo.save(args.out)
        print(f"wrote {args.out}: {topo.name}")
    else:
        print(topo.to_yaml(), end="")
    return 0
