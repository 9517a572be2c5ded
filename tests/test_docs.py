"""The documentation site builds with ``mkdocs build --strict`` (no broken link, anchor or API
reference), shows each study's newest benchmark record, and the README's links into ``docs/``
resolve as they do on GitHub."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _hooks(results: Path | None = None):
    """docs/hooks.py as a module, optionally reading records from ``results``."""
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if results is not None:
        module.RESULTS = results
    return module


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_every_page_of_the_nav_is_built(site):
    nav = _nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    assert "config-reference.md" in nav and "api.md" in nav
    for page in nav:
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), page
    # the API reference is rendered from the docstrings, not left as ::: directives
    api = (site / "api" / "index.html").read_text()
    assert ":::" not in api and "ExperimentConfig" in api and "emd_similarity" in api


def test_a_study_page_shows_its_newest_record(site):
    # the newest scale record, found here by its file name alone: the latest date, then a generated
    # record before a transcribed one
    records = sorted((REPO / "benchmarks" / "results" / "scale").glob("*.md"),
                     key=lambda p: (p.name[:10], not p.stem.endswith("transcribed")))
    newest = records[-1].read_text().splitlines()[0].removeprefix("# ")
    page = (site / "scale" / "index.html").read_text()
    assert html.escape(newest, quote=False) in page
    assert "Records: [benchmarks/results" not in page  # the marker line was replaced
    # the figure a page links outside docs/ is published with the site
    assert (site / "repo" / "benchmarks" / "results" / "fedefm_by_round.png").is_file()


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
