"""How fedsim's modules depend on each other (docs/architecture.md, "Layers").

* Only ``fedsim/distributed.py`` and ``fedsim/transport.py`` talk to ``torch.distributed``.
* The module graph — every ``import`` and ``from … import`` anywhere in a file, inside functions
  and ``if TYPE_CHECKING:`` blocks too, relative imports resolved, and the packages an import runs
  on the way — has no cycle, and every import points to the importer's layer or one below it.
* An import inside a function is kept only for a heavy optional dependency (:data:`LAZY`): never to
  hide a cycle.
* Loading and checking a config imports neither torch nor any algorithm (checked in a fresh
  interpreter: tests/integration/test_layering.py).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.harness import REPO

PACKAGE = REPO / "fedsim"
ALLOWED = {PACKAGE / "distributed.py", PACKAGE / "transport.py"}

#: fedsim's layers, lowest first: a module may import from its own layer and the layers below. A
#: name matches that module; ``X.*`` matches X and everything under it; the most specific wins.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundations", ["fedsim", "fedsim.errors", "fedsim.settings", "fedsim.plugins", "fedsim.ui"]),
    # plain dataclasses and names, no torch: what loading and checking a config reads
    ("configuration", ["fedsim.config.*", "fedsim.algorithms", "fedsim.algorithms.settings"]),
    ("building blocks", ["fedsim.topology", "fedsim.netmodel.*", "fedsim.emd.*", "fedsim.data.*", "fedsim.models.*",
                         "fedsim.metrics", "fedsim.losses", "fedsim.aggregation", "fedsim.stats",
                         "fedsim.report"]),
    ("ranks, messages and what they carry", [
        "fedsim.distributed", "fedsim.transport", "fedsim.launch", "fedsim.compression", "fedsim.optim",
        "fedsim.privacy.*", "fedsim.faults", "fedsim.checkpoint", "fedsim.downstream.*", "fedsim.fminit"]),
    ("federation", ["fedsim.federation"]),
    ("algorithms", ["fedsim.algorithms.*"]),
    ("the round loop's components", ["fedsim.evaluation", "fedsim.summary", "fedsim.callbacks.*", "fedsim.plots",
                                     "fedsim.netmodel.runclock"]),
    ("a run", ["fedsim.plan", "fedsim.trainer"]),
    ("experiments", ["fedsim.experiment", "fedsim.sweep"]),
    ("command line", ["fedsim.commands.*", "fedsim.cli", "fedsim.__main__"]),
]

#: the only modules a function may import (so that only the runs that use them pay for them)
LAZY = {
    "matplotlib": "figures, drawn only by plotting commands and callbacks",
    "torchvision": "data.kind torchvision and the torchvision classifiers (~170 MB of memory per rank)",
    "opacus": "privacy.mode sample / client only",
    "fedsim.privacy.dpsgd": "imports Opacus: a private run only",
    "fedsim.privacy.client": "imports Opacus: a private run only",
    "ot": "POT, the exact EMD solver",
    "cvxpy": "the cvxpylayers EMD backend and the optimised overlays",
    "cvxpylayers": "the cvxpylayers EMD backend",
    "torch.utils.tensorboard": "log.tensorboard: true only",
    "monai": "segmentation (U-Net decoder, Dice losses and scores) and monai.* models only: it imports all of "
             "itself and torchvision, seconds and ~300 MB a process",
    "scipy": "Student's t quantile (stats.t_quantile), asked for by the interval tables only: slow to import",
}

#: the command line imports a command's machinery when that command runs, so that `fedsim --help`,
#: `fedsim config` and `fedsim topology validate` start without torch (test_cli_starts_without_torch)
DEFERRED_BY_DESIGN = ("commands/",)
#: imports that point up a layer: (importer, imported); none left
NOT_YET_LAYERED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the fedsim module it imports (or runs on the way: a package's __init__)
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(root.rglob("*.py"))}


def _statements(tree: ast.AST):
    """Every import statement of ``tree`` with whether it sits inside a function."""
    def walk(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.Lambda)))
    yield from walk(tree, False)


def _absolute(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, known: set[str]) -> list[Import]:
    """The fedsim modules ``path`` imports. ``from p import x`` imports the submodule ``p.x`` when
    there is one, else ``p``; importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` that
    are not the importer's own (a package's ``__init__`` runs before any module under it)."""
    source = module_name(path)
    out = []
    for node, in_function in _statements(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = _absolute(node, source, path.name == "__init__.py")
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            names = subs + ([base] if len(subs) < len(node.names) else [])
        for name in names:
            if not name.startswith("fedsim"):
                continue
            while name and name not in known:  # `import fedsim.x.y` of an attribute path
                name = name.rpartition(".")[0]
            targets = [name]
            parent = name.rpartition(".")[0]
            while parent and not (source == parent or source.startswith(parent + ".")):
                targets.append(parent)
                parent = parent.rpartition(".")[0]
            out += [Import(source, t, node.lineno, in_function) for t in targets if t and t != source]
    return out


def module_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for imp in imports_of(path, set(modules)):
            graph[m].add(imp.target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as [a, b, …, a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module``: its own name, else the longest ``X.*`` over it."""
    best: tuple[tuple[bool, int], int] | None = None  # ((exact, length), layer)
    for n, (_, patterns) in enumerate(LAYERS):
        for p in patterns:
            if p == module:
                score = (True, len(p))
            elif p.endswith(".*") and (module == p[:-2] or module.startswith(p[:-1])):
                score = (False, len(p))
            else:
                continue
            if best is None or score > best[0]:
                best = (score, n)
    return None if best is None else best[1]


def _imports_torch_distributed(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.startswith("torch.distributed") for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.startswith("torch.distributed") or (mod == "torch" and any(a.name == "distributed" for a in node.names)):
                lines.append(node.lineno)
    return lines


def test_only_distributed_and_transport_import_torch_distributed():
    offenders = {str(p.relative_to(PACKAGE)): lines for p in sorted(PACKAGE.rglob("*.py"))
                 if p not in ALLOWED and (lines := _imports_torch_distributed(p))}
    assert offenders == {}


def test_the_check_sees_an_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import os\nimport torch.distributed as dist\nfrom torch import distributed\n")
    assert _imports_torch_distributed(bad) == [2, 3]


def test_the_module_graph_has_no_cycle():
    cycle = find_cycle(module_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_every_module_has_a_layer():
    assert [m for m in package_modules() if layer_of(m) is None] == [], "give these modules a layer in LAYERS"


def test_no_module_imports_from_a_layer_above_its_own():
    modules = package_modules()
    upward = []
    for path in modules.values():
        for imp in imports_of(path, set(modules)):
            src, dst = layer_of(imp.source), layer_of(imp.target)
            if src is not None and dst is not None and dst > src and (imp.source, imp.target) not in NOT_YET_LAYERED:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{imp.line} {imp.source} ({LAYERS[src][0]}) "
                              f"imports {imp.target} ({LAYERS[dst][0]})")
    assert upward == []


def test_the_pending_exceptions_are_still_needed():
    graph = module_graph()
    assert [pair for pair in NOT_YET_LAYERED if pair[1] not in graph.get(pair[0], set())] == [], \
        "remove these pairs from NOT_YET_LAYERED"


def test_functions_import_only_heavy_optional_dependencies():
    lazy = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(DEFERRED_BY_DESIGN):
            continue
        source = module_name(path)
        for node, in_function in _statements(ast.parse(path.read_text(), str(path))):
            if not in_function:
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [_absolute(node, source, path.name == "__init__.py")])
            lazy += [f"{rel}:{node.lineno} {n}" for n in names
                     if not any(n == ok or n.startswith(ok + ".") for ok in LAZY)]
    assert lazy == [], "import these at the top of the module (a function-level import is for LAZY only)"


def test_the_checks_see_function_level_relative_and_package_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "fedsim"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from fedsim.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from fedsim.c import X\n")
    (pkg / "sub" / "b.py").write_text("from . import b2\nfrom ..a import f\n")
    (pkg / "sub" / "b2.py").write_text("")
    (pkg / "c.py").write_text("import fedsim.a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    known = set(package_modules(pkg))
    assert [(i.target, i.in_function) for i in imports_of(pkg / "a.py", known)] == [("fedsim.sub.b", True),
                                                                                  ("fedsim.sub", True)]
    assert {i.target for i in imports_of(pkg / "sub" / "b.py", known)} == {"fedsim.sub.b2", "fedsim.a"}
    graph = {m: {i.target for i in imports_of(p, known)} for m, p in package_modules(pkg).items()}
    assert find_cycle(graph) == ["fedsim.a", "fedsim.sub", "fedsim.c", "fedsim.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_layers_match_the_most_specific_pattern():
    assert LAYERS[layer_of("fedsim.algorithms")][0] == "configuration"  # the registry
    assert LAYERS[layer_of("fedsim.algorithms.settings")][0] == "configuration"
    assert LAYERS[layer_of("fedsim.algorithms.fedefm")][0] == "algorithms"
    assert LAYERS[layer_of("fedsim.netmodel.runclock")][0] == "the round loop's components"
    assert LAYERS[layer_of("fedsim.netmodel.overlays")][0] == "building blocks"
    assert layer_of("fedsim.nowhere") is None
