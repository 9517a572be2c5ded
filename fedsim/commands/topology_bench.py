"""``fedsim topology cycle-time`` and ``fedsim topology overlay``: the delay model on a network.

Register with ``register_cycle_time(topology_subparsers)`` / ``register_overlay(...)``; each sets
``func`` to a handler ``(args) -> int`` (0 ok, 2 user error: the message is printed on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fedsim.errors import ConfigError, TopologyError
from fedsim.netmodel.model import DEFAULT_ACCESS_GBPS
from fedsim.netmodel.model import FEMNIST_COMPUTE_MS as DEFAULT_COMPUTE_MS
from fedsim.netmodel.model import FEMNIST_MODEL_BITS as DEFAULT_MODEL_BITS
from fedsim.netmodel.overlays import EXTRA_KINDS
from fedsim.netmodel.overlays import OVERLAY_KINDS as ALL_OVERLAYS

OVERLAY_CHOICES = (*ALL_OVERLAYS, *EXTRA_KINDS)


def _add_constants(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("delay model (defaults: MultigraphFL's FEMNIST constants)")
    g.add_argument("--model-bits", type=float, default=DEFAULT_MODEL_BITS, metavar="M",
                   help=f"size of one model copy in bits (default {DEFAULT_MODEL_BITS:,})")
    g.add_argument("--compute-ms", type=float, default=DEFAULT_COMPUTE_MS, metavar="T",
                   help=f"local computation time per round in ms (default {DEFAULT_COMPUTE_MS})")
    g.add_argument("--access-gbps", type=float, default=DEFAULT_ACCESS_GBPS, metavar="A",
                   help=f"each silo's access link capacity, Gbit/s each way (default {DEFAULT_ACCESS_GBPS:g})")


def register_cycle_time(topology_subparsers) -> argparse.ArgumentParser:
    p = topology_subparsers.add_parser(
        "cycle-time",
        help="cycle time of every overlay (STAR, MATCHA, MST, δ-MBST, RING, multigraph) on a network",
        description=(
            "Build each overlay on a network underlay (a topology YAML or GML whose edges carry "
            "distance_km) and print its cycle time under MultigraphFL's delay model: latency "
            "0.0085 ms/km + 4 ms along shortest paths, 1 Gbit/s core links shared by hops, "
            "access links shared by the overlay degree."
        ),
    )
    p.add_argument("file", metavar="FILE", help="network underlay (.yaml or .gml) with distance_km on every edge")
    _add_constants(p)
    p.add_argument("--csv", metavar="FILE", help="also write a CSV with columns overlay,cycle_time_ms")
    p.add_argument("--overlays", default=",".join(ALL_OVERLAYS), metavar="LIST",
                   help=f"comma-separated subset of {','.join(OVERLAY_CHOICES)} (default: all but complete)")
    p.set_defaults(handler=cmd_cycle_time)
    return p


def register_overlay(topology_subparsers) -> argparse.ArgumentParser:
    p = topology_subparsers.add_parser(
        "overlay",
        help="write one overlay of a network (star, mst, ring, multigraph, ...) as a topology YAML",
        description=(
            "Build an overlay on a network underlay and write it as a topology YAML whose edges "
            "carry latency_ms, bandwidth_mbps and distance_km, ready to train on."
        ),
    )
    p.add_argument("file", metavar="FILE", help="network underlay (.yaml or .gml) with distance_km on every edge")
    p.add_argument("kind", metavar="KIND", help=f"one of {', '.join(OVERLAY_CHOICES)}")
    p.add_argument("-o", "--output", metavar="OUT.yaml", help="output file (default: print to stdout)")
    _add_constants(p)
    p.set_defaults(handler=cmd_overlay)
    return p


def _model(args):
    from fedsim.netmodel import DelayModel

    return DelayModel(model_bits=args.model_bits, compute_ms=args.compute_ms, access_gbps=args.access_gbps)


def _connectivity(args):
    from fedsim.netmodel import connectivity_graph
    from fedsim.topology import load_topology

    return connectivity_graph(load_topology(args.file), _model(args))


def _kinds(text: str) -> list[str]:
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in OVERLAY_CHOICES]
    if bad or not kinds:
        raise TopologyError(
            f"--overlays: unknown overlay(s) {', '.join(bad) or '(none given)'}; "
            f"choose from {','.join(OVERLAY_CHOICES)}"
        )
    return list(dict.fromkeys(kinds))


def cmd_cycle_time(args) -> int:
    from fedsim.netmodel import build_overlays
    from fedsim.report import print_table

    kinds = _kinds(args.overlays)
    t0 = time.perf_counter()
    conn = _connectivity(args)
    timings: dict[str, float] = {}
    overlays = build_overlays(conn, kinds, timings)
    total = time.perf_counter() - t0

    from fedsim.ui import console

    m = conn.model
    rows = []
    for kind, o in overlays.items():
        deg: dict[int, int] = {}
        for u, v in o.edges:
            deg[u] = deg.get(u, 0) + 1
            deg[v] = deg.get(v, 0) + 1
        rows.append([kind, f"{o.cycle_time_ms:.1f}", str(len(o.edges)), str(max(deg.values())), f"{timings[kind]:.2f}"])
    con = console()
    print_table(["overlay", "cycle time (ms)", "edges", "max degree", "built in (s)"], rows, console=con,
                title=(f"Cycle time on {conn.name} ({conn.n} silos; M = {m.model_bits:,.0f} bits, "
                       f"T_c = {m.compute_ms:g} ms, access {m.access_gbps:g} Gbit/s)"))
    con.print(f"total {total:.1f} s")
    if args.csv:
        try:
            path = Path(args.csv)
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = ["overlay,cycle_time_ms"] + [f"{k},{o.cycle_time_ms:.6f}" for k, o in overlays.items()]
            path.write_text("\n".join(lines) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write --csv {args.csv}: {exc.strerror or exc}") from None
        con.print(f"wrote {path}")
    return 0


def cmd_overlay(args) -> int:
    from fedsim.netmodel import build_overlay

    kind = args.kind.strip().lower()
    if kind not in OVERLAY_CHOICES:
        raise TopologyError(f"unknown overlay {args.kind!r}; choose one of {', '.join(OVERLAY_CHOICES)}")
    overlay = build_overlay(_connectivity(args), kind)
    topo = overlay.to_topology()
    if not args.output:
        sys.stdout.write(topo.to_yaml())
        return 0
    try:
        topo.save(args.output)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output}: {kind} overlay of {overlay.conn.name}, {topo.num_silos} silos, "
          f"{len(topo.edges)} edges, cycle time {overlay.cycle_time_ms:.1f} ms")
    return 0
