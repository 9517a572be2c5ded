"""The settings mechanism: a field's meaning read from the comments of its dataclass's source."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

from fedsim.settings import field_docs

SOURCE = '''
from dataclasses import dataclass, field
from typing import Annotated

from fedsim.settings import Range


@dataclass
class Base:
    """A base section."""

    inherited: int = 1  # from the base class


@dataclass
class Section(Base):
    """A section written the ways the code's dataclasses are."""

    plain: int = 0  # at the end of the line
    continued: float = 0.5  # a comment that goes on
    #                         on the next line, aligned past the '#'
    # a block above a field without its own comment
    # (two lines of it)
    above: str = "x"
    #: a doc comment above
    doc_comment: bool = True
    # a group heading over the next fields
    own: int = 3  # its own comment wins over the heading
    spread: Annotated[
        int, Range(ge=0)
    ] = 2  # on the last line of a field written over several
    bare: list = field(default_factory=list)
    after_bare: int = 4  # not bare's
'''


def _module(tmp_path, monkeypatch, name="settings_fixture"):
    """The source above as a module in a real file (``inspect.getsource`` finds a class through
    its module)."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(SOURCE))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_field_docs_reads_each_comment_style(tmp_path, monkeypatch):
    docs = field_docs(_module(tmp_path, monkeypatch).Section)
    assert docs == {
        "inherited": "from the base class",
        "plain": "at the end of the line",
        "continued": "a comment that goes on on the next line, aligned past the '#'",
        "above": "a block above a field without its own comment (two lines of it)",
        "doc_comment": "a doc comment above",
        "own": "its own comment wins over the heading",
        "spread": "on the last line of a field written over several",
        "bare": "",
        "after_bare": "not bare's",
    }


def test_a_class_made_at_run_time_keeps_the_comments_of_its_bases():
    from fedsim.config import ExperimentConfig  # made by make_dataclass over _Experiment

    docs = field_docs(ExperimentConfig)
    assert docs["timeout_s"] == "a silo silent for this long is reported as failed"
    assert docs["fedefm"] == ""  # an algorithm's section: documented by its dataclass's docstring
