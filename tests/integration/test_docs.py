"""The documentation site builds with ``mkdocs build --strict`` (no broken link, anchor or API
reference), shows each study's newest benchmark record, and the README's links into ``docs/``
resolve as they do on GitHub.

The checks that need no process: tests/test_docs.py."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness import REPO


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
