"""The documentation, read as files: the README's links into ``docs/`` resolve as they do on GitHub,
nothing cites a document outside the repository, and which benchmark record a study page shows."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from tests.harness import REPO


def _hooks(results: Path | None = None):
    """docs/hooks.py as a module, optionally reading records from ``results``."""
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if results is not None:
        module.RESULTS = results
    return module


def test_record_choice(tmp_path):
    """Latest date wins; on a date a generated record beats a transcribed one; quick runs only
    when nothing else exists; files of the same date and commit are shown together."""
    study = tmp_path / "s"
    study.mkdir()
    for name in ["2026-11-20-aaaaaaa-transcribed", "2026-11-21-bbbbbbb-transcribed", "2026-11-21-ccccccc-x",
                 "2026-11-21-ccccccc-y", "2026-11-25-ddddddd-quick"]:
        (study / f"{name}.md").write_text(f"# {name}\n")
    hooks = _hooks(tmp_path)
    latest, every = hooks.records("s")
    assert [p.stem for p in latest] == ["2026-11-21-ccccccc-x", "2026-11-21-ccccccc-y"]
    assert every[-1].stem == "2026-11-25-ddddddd-quick" and len(every) == 5
    for p in study.glob("2026-11-21-*"):
        p.unlink()
    assert [p.stem for p in hooks.records("s")[0]] == ["2026-11-20-aaaaaaa-transcribed"]
    (study / "2026-11-20-aaaaaaa-transcribed.md").unlink()
    assert [p.stem for p in hooks.records("s")[0]] == ["2026-11-25-ddddddd-quick"]
    # two generated records on one date: the later time in the JSON
    for name, time in [("2026-12-01-eeeeeee", "2026-12-01T09:00:00+00:00"), ("2026-12-01-fffffff", "2026-12-01T08:00:00+00:00")]:
        (study / f"{name}.md").write_text(f"# {name}\n")
        (study / f"{name}.json").write_text(json.dumps({"time": time}))
    assert [p.stem for p in hooks.records("s")[0]] == ["2026-12-01-eeeeeee"]


def test_readme_links_into_docs_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", readme) if not re.match(r"[a-z]+:", t)]
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        assert (REPO / target.split("#")[0]).exists(), target


def test_nothing_cites_a_document_outside_the_repository():
    texts = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "benchmarks" / "results").rglob("*.md")]
    for path in texts:
        text = path.read_text()
        for pattern in (r"SPEC ?§", r"CYCLETIME", r"\b[Ii]ssue \d+", r"\bseed 00\d\b"):
            assert not re.search(pattern, text), f"{path.relative_to(REPO)} cites {pattern}"
