"""Topologies: which silo sends its model to which, read from YAML or GML underlays.

A topology file names silos 0…N−1 and lists edges ``[j, i]`` meaning *j is an in-neighbour of
i*. ``directed: false`` makes every edge two-way. Validation collects every problem in the file
and reports them together, so a user fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import html
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from fedsim.errors import TopologyError

SILO_NUMBERS = ("compute_ms", "access_gbps")
EDGE_NUMBERS = ("latency_ms", "bandwidth_mbps", "distance_km")
MAKE_KINDS = ("ring", "star", "complete", "chain", "random-regular")
#: every key a topology file may hold, where: fedsim's own (the overlays of fedsim.netmodel write
#: the ones beyond the basics); anything of the user's own goes under the free-form ``meta:``
#: mapping, so that a misspelt key (``latncy_ms``) is an error rather than a silent default
FREE_FORM = "meta"
TOP_KEYS = ("name", "silos", "edges", "directed", "overlay", "network", "cycle_time_ms", "delay_model",
            "server", "cycle_time_rule", "construction", "max_degree", "tour", "t_max", "multigraph_states",
            "matching_probabilities", FREE_FORM)
SILO_KEYS = ("id", "name", *SILO_NUMBERS, FREE_FORM)
EDGE_KEYS = ("src", "dst", *EDGE_NUMBERS, "parallel", "matching", FREE_FORM)


@dataclass(frozen=True)
class Silo:
    """One participant (a hospital): its id, a display name and optional network attributes."""

    id: int
    name: str
    compute_ms: float | None = None
    access_gbps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Edge:
    """A declared edge ``src → dst`` (src is an in-neighbour of dst) with optional link attributes."""

    src: int
    dst: int
    latency_ms: float | None = None
    bandwidth_mbps: float | None = None
    distance_km: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def attributes(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in EDGE_NUMBERS if getattr(self, k) is not None}
        out.update(self.extra)
        return out


@dataclass
class Topology:
    """A validated topology: silos, declared edges (in file order) and whether they are directed."""

    name: str
    silos: list[Silo]
    edges: list[Edge]
    directed: bool = True
    source: str = "<memory>"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arcs: list[tuple[int, int]] = []
        for e in self.edges:
            arcs.append((e.src, e.dst))
            if not self.directed:
                arcs.append((e.dst, e.src))
        self._arcs = list(dict.fromkeys(arcs))
        self._in: list[list[int]] = [[] for _ in self.silos]
        self._out: list[list[int]] = [[] for _ in self.silos]
        for j, i in self._arcs:
            self._in[i].append(j)
            self._out[j].append(i)
        for lst in (*self._in, *self._out):
            lst.sort()

    @property
    def num_silos(self) -> int:
        return len(self.silos)

    @property
    def arcs(self) -> list[tuple[int, int]]:
        """Directed arcs ``(j, i)``: j sends to i. Undirected edges give both directions."""
        return list(self._arcs)

    def in_neighbours(self, i: int) -> list[int]:
        """N_in(i): silos whose models silo i receives, ascending."""
        return list(self._in[i])

    def out_neighbours(self, i: int) -> list[int]:
        """Silos that receive silo i's model, ascending."""
        return list(self._out[i])

    def in_degree(self, i: int) -> int:
        return len(self._in[i])

    def out_degree(self, i: int) -> int:
        return len(self._out[i])

    def edge(self, j: int, i: int) -> Edge | None:
        """The declared edge carrying arc j → i (either orientation when undirected)."""
        for e in self.edges:
            if (e.src, e.dst) == (j, i) or (not self.directed and (e.src, e.dst) == (i, j)):
                return e
        return None

    def is_strongly_connected(self) -> bool:
        return _strongly_connected(self.num_silos, self._arcs)

    def to_networkx(self):
        """The graph with silo and edge attributes, nodes and edges in file order.

        Undirected topologies give an ``nx.Graph`` (edge insertion order = file order, which the
        delay model relies on), directed ones an ``nx.DiGraph``.
        """
        g = nx.DiGraph() if self.directed else nx.Graph()
        g.graph["name"] = self.name
        for s in self.silos:
            attrs = {"name": s.name, **s.extra}
            for k in SILO_NUMBERS:
                if getattr(s, k) is not None:
                    attrs[k] = getattr(s, k)
            g.add_node(s.id, **attrs)
        for e in self.edges:
            g.add_edge(e.src, e.dst, **e.attributes())
        return g

    def to_dict(self) -> dict[str, Any]:
        plain = all(
            s.name == str(s.id) and s.compute_ms is None and s.access_gbps is None and not s.extra
            for s in self.silos
        )
        silos: Any = self.num_silos
        if not plain:
            silos = []
            for s in self.silos:
                d: dict[str, Any] = {"id": s.id, "name": s.name}
                d.update({k: getattr(s, k) for k in SILO_NUMBERS if getattr(s, k) is not None})
                d.update(s.extra)
                silos.append(d)
        edges = [
            {"src": e.src, "dst": e.dst, **e.attributes()} if e.attributes() else [e.src, e.dst]
            for e in self.edges
        ]
        return {"name": self.name, "silos": silos, "directed": self.directed, **self.extra,
                "edges": edges}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), default_flow_style=None, sort_keys=False, width=120)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path


def _strongly_connected(n: int, arcs: Iterable[tuple[int, int]]) -> bool:
    if n == 0:
        return False
    fwd: list[list[int]] = [[] for _ in range(n)]
    bwd: list[list[int]] = [[] for _ in range(n)]
    for j, i in arcs:
        fwd[j].append(i)
        bwd[i].append(j)

    def reach(adj: list[list[int]]) -> int:
        seen, stack = {0}, [0]
        while stack:
            for v in adj[stack.pop()]:
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
        return len(seen)

    return reach(fwd) == n and reach(bwd) == n


def _number(value: Any, what: str, problems: list[str]) -> float | None:
    """A non-negative finite number, or None (and a problem noted) when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{what} must be a number, got {value!r}")
        return None
    if not math.isfinite(value) or value < 0:
        problems.append(f"{what} must be a non-negative finite number, got {value!r}")
        return None
    return float(value)


def _unknown_keys(entry: dict, known: tuple[str, ...], what: str, problems: list[str]) -> None:
    for key in entry:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(f"{what} has unknown key '{key}' ({hint}known: {', '.join(known)}; "
                            f"put data of your own under '{FREE_FORM}:')")


def _silo_index(value: Any, n: int, what: str, problems: list[str]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{what} must be a silo id (an integer), got {value!r}")
        return None
    if not 0 <= value < n:
        problems.append(f"{what} names unknown silo {value} (silos are 0..{n - 1})")
        return None
    return value


def parse_topology(
    data: Any, source: str = "<memory>", *, require_strongly_connected: bool = False
) -> Topology:
    """Build a Topology from the YAML mapping; raise TopologyError listing every problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: a topology must be a YAML mapping with 'silos' and 'edges'")
    for key in ("silos", "edges"):
        if key not in data:
            problems.append(f"missing key '{key}'")
    _unknown_keys(data, TOP_KEYS, "the file", problems)
    directed = data.get("directed", True)
    if not isinstance(directed, bool):
        problems.append(f"'directed' must be true or false, got {directed!r}")
        directed = True
    name = str(data.get("name", Path(source).stem))

    silos: list[Silo] = []
    raw_silos = data.get("silos", [])
    if isinstance(raw_silos, bool) or not isinstance(raw_silos, (int, list)):
        problems.append(f"'silos' must be a count or a list of silos, got {raw_silos!r}")
    elif isinstance(raw_silos, int):
        if raw_silos < 1:
            problems.append(f"'silos' must be at least 1, got {raw_silos}")
        silos = [Silo(i, str(i)) for i in range(max(raw_silos, 0))]
    else:
        for pos, entry in enumerate(raw_silos):
            what = f"silos[{pos}]"
            if not isinstance(entry, dict):
                entry = {"name": entry}
            _unknown_keys(entry, SILO_KEYS, what, problems)
            sid = entry.get("id", pos)
            if sid != pos:
                problems.append(f"{what} has id {sid!r}; silo ids must be 0..N-1 in order")
            nums = {k: _number(entry[k], f"{what}.{k}", problems) for k in SILO_NUMBERS if k in entry}
            extra = {k: v for k, v in entry.items() if k not in ("id", "name", *SILO_NUMBERS)}
            silos.append(Silo(pos, str(entry.get("name", pos)), extra=extra, **nums))
    n = len(silos)

    edges: list[Edge] = []
    seen: dict[tuple[int, int], int] = {}
    raw_edges = data.get("edges", [])
    if not isinstance(raw_edges, list):
        problems.append("'edges' must be a list of [src, dst] pairs or {src, dst, ...} mappings")
        raw_edges = []
    for pos, entry in enumerate(raw_edges):
        what = f"edges[{pos}]"
        if isinstance(entry, list) and len(entry) == 2:
            entry = {"src": entry[0], "dst": entry[1]}
        if not isinstance(entry, dict) or "src" not in entry or "dst" not in entry:
            problems.append(f"{what} must be [src, dst] or a mapping with 'src' and 'dst', got {entry!r}")
            continue
        _unknown_keys(entry, EDGE_KEYS, what, problems)
        src = _silo_index(entry["src"], n, f"{what}.src", problems)
        dst = _silo_index(entry["dst"], n, f"{what}.dst", problems)
        nums = {k: _number(entry[k], f"{what}.{k}", problems) for k in EDGE_NUMBERS if k in entry}
        if src is None or dst is None:
            continue
        if src == dst:
            problems.append(f"{what} is a self-loop on silo {src}")
            continue
        key = (src, dst) if directed else (min(src, dst), max(src, dst))
        if key in seen:
            problems.append(f"{what} [{src}, {dst}] duplicates edges[{seen[key]}]")
            continue
        seen[key] = pos
        extra = {k: v for k, v in entry.items() if k not in ("src", "dst", *EDGE_NUMBERS)}
        edges.append(Edge(src, dst, extra=extra, **nums))

    touched = {e.src for e in edges} | {e.dst for e in edges}
    isolated = [i for i in range(n) if i not in touched]
    if isolated and n > 1:
        problems.append(f"isolated silo(s) {_short(isolated)} have no edges")
    extra = {k: v for k, v in data.items() if k not in ("name", "silos", "edges", "directed")}
    topo = Topology(name, silos, edges, directed, source, extra)
    if (
        require_strongly_connected
        and not problems
        and n > 1
        and not topo.is_strongly_connected()
    ):
        problems.append("the graph is not strongly connected (every silo must reach every other)")
    if problems:
        raise TopologyError(f"{source}: " + "; ".join(problems))
    return topo


def _short(items: list[int], limit: int = 10) -> str:
    text = ", ".join(map(str, items[:limit]))
    return text + (f", … ({len(items)} in all)" if len(items) > limit else "")


def shipped_topologies() -> dict[str, Path]:
    """name → file of every topology shipped with the package (``fedsim/topologies/NAME.yaml``,
    package data: found after a non-editable install too, from any working directory)."""
    folder = files("fedsim") / "topologies"
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_topology(path: str | Path, *, require_strongly_connected: bool = False) -> Topology:
    """Read and validate a topology file (``.yaml``/``.yml``, or a ``.gml`` network underlay), or
    a shipped topology by name (``gaia``, ``ring-4``, …) when no such file exists."""
    path = Path(path)
    if not path.is_file():
        shipped = shipped_topologies()
        if str(path) not in shipped:
            raise TopologyError(f"{path}: topology file not found (shipped names: {', '.join(sorted(shipped))})")
        path = shipped[str(path)]
    if path.suffix.lower() == ".gml":
        return gml_to_topology(path, require_strongly_connected=require_strongly_connected)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TopologyError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_topology(data, str(path), require_strongly_connected=require_strongly_connected)


_GML_BLOCK = re.compile(r"\b(node|edge)\s*\[(.*?)\]", re.S)
_GML_PAIR = re.compile(r"(\w+)\s+(\"[^\"]*\"|\S+)")


def gml_to_topology(
    path: str | Path, name: str | None = None, *, require_strongly_connected: bool = False
) -> Topology:
    """Convert a network GML (Topology Zoo style, edges with ``distance`` km) to an underlay.

    Node and edge file order is kept: the delay model's Dijkstra and Kruskal tie-breaking depend
    on it. Silo names come from ``label``.
    """
    path = Path(path)
    text = path.read_text()
    ids: dict[str, int] = {}
    silos: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    problems: list[str] = []
    for kind, body in _GML_BLOCK.findall(text):
        attrs = {k: v.strip('"') for k, v in _GML_PAIR.findall(body)}
        if kind == "node":
            ids[attrs.get("id", str(len(ids)))] = len(silos)
            silos.append({"id": len(silos), "name": html.unescape(attrs.get("label", str(len(silos))))})
            continue
        pos = len(edges)
        src, dst = ids.get(attrs.get("source", "?")), ids.get(attrs.get("target", "?"))
        if src is None or dst is None:
            problems.append(f"edge {pos} refers to an unknown node ({attrs.get('source')}→{attrs.get('target')})")
            continue
        if "distance" not in attrs:
            problems.append(f"edge {pos} ({silos[src]['name']}–{silos[dst]['name']}) has no 'distance'")
            continue
        try:
            distance = float(attrs["distance"])
        except ValueError:
            problems.append(f"edge {pos} has a non-numeric distance {attrs['distance']!r}")
            continue
        edges.append({"src": src, "dst": dst, "distance_km": distance})
    if not silos:
        problems.append("no 'node [...]' blocks found; is this a GML file?")
    if problems:
        raise TopologyError(f"{path}: " + "; ".join(problems))
    data = {"name": name or path.stem, "silos": silos, "directed": False, "edges": edges}
    return parse_topology(data, str(path), require_strongly_connected=require_strongly_connected)


def make_topology(kind: str, n: int, *, degree: int = 3, seed: int = 0) -> Topology:
    """Simple generated topologies (undirected): ring, star (silo 0 the hub), complete, chain,
    random-regular (connected, every silo with ``degree`` neighbours)."""
    if kind not in MAKE_KINDS:
        raise TopologyError(f"unknown topology kind {kind!r}; choose one of {', '.join(MAKE_KINDS)}")
    if n < 2:
        raise TopologyError(f"a {kind} topology needs at least 2 silos, got {n}")
    if kind == "ring":
        pairs = [(i, (i + 1) % n) for i in range(n)] if n > 2 else [(0, 1)]
    elif kind == "star":
        pairs = [(0, i) for i in range(1, n)]
    elif kind == "complete":
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    elif kind == "chain":
        pairs = [(i, i + 1) for i in range(n - 1)]
    else:
        if not 1 <= degree < n or (n * degree) % 2:
            raise TopologyError(
                f"random-regular needs 1 <= degree < N and N·degree even, got N={n}, degree={degree}"
            )
        for attempt in range(100):
            g = nx.random_regular_graph(degree, n, seed=seed + attempt)
            if nx.is_connected(g):
                break
        else:
            raise TopologyError(f"no connected {degree}-regular graph found on {n} silos")
        pairs = sorted((min(a, b), max(a, b)) for a, b in g.edges)
    name = f"{kind}-{n}" if kind != "random-regular" else f"random-regular-{n}-d{degree}"
    return parse_topology(
        {"name": name, "silos": n, "directed": False, "edges": [list(p) for p in pairs]}, name
    )


def resolve_topology(spec: str) -> Topology:
    """A topology from a file path, a shipped name (``gaia`` → fedsim/topologies/gaia.yaml) or ``KIND:N``."""
    path = Path(spec)
    if path.is_file():
        return load_topology(path)
    if ":" in spec and spec.split(":", 1)[0] in MAKE_KINDS:
        kind, n = spec.split(":", 1)
        try:
            return make_topology(kind, int(n))
        except ValueError:
            raise TopologyError(f"topology {spec!r}: expected KIND:N with an integer N") from None
    shipped = shipped_topologies()
    name = spec[: -len(".yaml")] if spec.endswith(".yaml") else spec
    if name in shipped:
        return load_topology(shipped[name])
    raise TopologyError(
        f"topology {spec!r} not found: give a YAML file, KIND:N ({', '.join(MAKE_KINDS)}), "
        f"or one of the shipped names: {', '.join(sorted(shipped))}"
    )
