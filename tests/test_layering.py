"""Where ranks live: only ``fedsim/distributed.py`` and ``fedsim/transport.py`` may talk to
``torch.distributed``; everything else goes through them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedsim"
ALLOWED = {PACKAGE / "distributed.py", PACKAGE / "transport.py"}


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
