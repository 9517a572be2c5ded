"""MkDocs hook: the repository's files that the pages link to, and the benchmarks' records, in the site.

The pages are written to read on GitHub too, so a link to a file outside ``docs/`` is relative to
the page (``../benchmarks/results/fedefm_by_round.png``, ``../fedsim/topologies/README.md``).
MkDocs sees only ``docs/``: this hook publishes each such file at ``repo/<path>`` in the site and
points the link there, so ``mkdocs build --strict`` still fails for a link to a file that does
not exist.

A line ``Records: [benchmarks/results/STUDY/](../benchmarks/results/STUDY/)`` (on GitHub a link
to the folder) becomes, in the site, the study's newest record — its headings moved two levels
down, its links pointing at the published files — followed by links to every record of the study.
Records are ``<date>-<commit>[-<variant>].md`` as ``benchmarks/common.py`` writes them. The newest
is the latest date; on a date, a generated record before a transcribed one, then the later
``time`` in its JSON. Quick runs (a variant containing ``quick``) are shown only when a study has
nothing else. The files sharing the chosen date and commit are shown together (e.g. one per
algorithm). A ``\\|`` in a code span of a table row (GitHub's escape) loses its backslash.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SITE_DIR = "repo"  # where files from outside docs/ are published
LINK = re.compile(r"(!?\[[^\]]*\]\()(\.\./[^)\s#]+)(#[^)\s]*)?\)")
RECORDS = re.compile(r"^Records: \[benchmarks/results/([\w-]+)/\]\(\.\./benchmarks/results/\1/\)[ \t]*$", re.M)
STEM = re.compile(r"^(\d{4}-\d{2}-\d{2})-([^-]+)(?:-(.+))?$")


def _outside(target: str) -> Path | None:
    """The repository file a page's ``../...`` link names, if it is one outside docs/."""
    path = (REPO / "docs" / target).resolve()
    if not path.is_relative_to(REPO) or path.is_relative_to(REPO / "docs") or not path.is_file():
        return None
    return path


def on_files(files: Files, config) -> Files:
    wanted = {p for p in RESULTS.rglob("*") if p.is_file()}
    for page in Path(config["docs_dir"]).glob("*.md"):
        for match in LINK.finditer(page.read_text(encoding="utf-8")):
            path = _outside(match.group(2))
            if path is not None:
                wanted.add(path)
    for path in sorted(wanted):
        files.append(File.generated(config, f"{SITE_DIR}/{path.relative_to(REPO).as_posix()}", abs_src_path=str(path)))
    return files


def _rank(path: Path) -> tuple:
    date, _, variant = STEM.match(path.stem).groups()
    variant = variant or ""
    stamp = ""
    meta = path.with_suffix(".json")
    if meta.is_file():
        try:
            stamp = json.loads(meta.read_text(encoding="utf-8")).get("time") or ""
        except (ValueError, AttributeError):
            stamp = ""
    return ("quick" not in variant, date, not variant.endswith("transcribed"), stamp, path.name)


def records(study: str) -> tuple[list[Path], list[Path]]:
    """(the newest records of ``study`` to show, every record newest first)."""
    found = sorted((p for p in (RESULTS / study).glob("*.md") if STEM.match(p.stem)), key=_rank, reverse=True)
    if not found:
        return [], []
    date, commit, _ = STEM.match(found[0].stem).groups()
    kind = _rank(found[0])[0], _rank(found[0])[2]
    latest = [p for p in found if STEM.match(p.stem).groups()[:2] == (date, commit) and (_rank(p)[0], _rank(p)[2]) == kind]
    return sorted(latest), found


def _demote(markdown: str, levels: int) -> str:
    out, fence = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"#{1,6} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def _relink(markdown: str, base: str) -> str:
    """Relative links of a record (to its figures) → ``base/<link>``."""
    return re.sub(r"(!?\[[^\]]*\]\()(?![a-z]+:|/|#)([^)\s]+)\)", lambda m: f"{m.group(1)}{base}/{m.group(2)})", markdown)


def _show(study: str, prefix: str) -> str:
    latest, every = records(study)
    folder = f"benchmarks/results/{study}"
    if not latest:
        return f"*No record of `{study}` yet: the benchmark writes one to `{folder}/` when it runs.*"
    base = f"{prefix}{SITE_DIR}/{folder}"
    shown = [_demote(_relink(p.read_text(encoding="utf-8"), base), 2) for p in latest]
    links = " · ".join(f"[{p.stem}]({base}/{p.name})" for p in every)
    return "\n\n".join([*shown, f"All records of `{study}` (`{folder}/`), newest first: {links}"])


def _table_code(markdown: str) -> str:
    """``\\|`` inside a code span of a table row → ``|``: GitHub needs the escape there, while
    Python-Markdown already keeps a code span's pipes in one cell and would show the backslash."""
    def row(line: str) -> str:
        if not line.startswith("|"):
            return line
        return re.sub(r"`[^`]*`", lambda m: m.group(0).replace("\\|", "|"), line)

    return "\n".join(row(line) for line in markdown.split("\n"))


def on_page_markdown(markdown: str, page, config, files) -> str:
    prefix = "../" * page.file.src_uri.count("/")
    markdown = _table_code(RECORDS.sub(lambda m: _show(m.group(1), prefix), markdown))

    def link(m: re.Match) -> str:
        path = _outside(m.group(2))
        if path is None:
            return m.group(0)  # left for MkDocs to report
        return f"{m.group(1)}{prefix}{SITE_DIR}/{path.relative_to(REPO).as_posix()}{m.group(3) or ''})"

    return LINK.sub(link, markdown)
