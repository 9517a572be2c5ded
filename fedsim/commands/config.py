"""``fedsim config``: the resolved config of a run, or ``--reference``: every config key.

The reference is generated from the settings dataclasses, never written by hand: each key's type,
range and choices from its type hint (:mod:`fedsim.settings`), its default from a fresh
``ExperimentConfig()`` (so the per-algorithm sections from the registry and the defaults their
factories set are the real ones), its meaning from the field's comment
(:func:`fedsim.settings.field_docs`) and each section's summary from its dataclass's docstring.
``docs/config-reference.md`` is this output; a test keeps it in step with the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedsim.config import ExperimentConfig
from fedsim.errors import ConfigError
from fedsim.settings import Range, field_docs, field_hints, section_list_item

#: where the generated page lives in the repository, and the command that writes it
REFERENCE_FILE = "docs/config-reference.md"
REGENERATE = f"fedsim config --reference -o {REFERENCE_FILE}"

HELP = """\
Print the config a run would use: the embedded default (fedsim/default.yaml) or CONFIG, with the
--set overrides applied and checked exactly as `fedsim run` does, as YAML (a file to start from).
With --reference, print instead the reference of every config key (dotted path, type, default,
allowed values, meaning) as one markdown page, generated from the code: docs/config-reference.md
is this page. `fedsim list` names what the keys can name (algorithms, models, topologies, ...)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved config, or --reference: every config key explained",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="experiment YAML (default: the embedded default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key by dotted path, e.g. --set rounds=3 (as for fedsim run)")
    p.add_argument("--reference", action="store_true",
                   help="print every config key with its type, default, range or choices and meaning (markdown)")
    p.add_argument("-o", "--out", metavar="PATH", help="write to PATH instead of printing")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.reference:
        if args.config or args.overrides:
            raise ConfigError("--reference describes every key with its default; give it no CONFIG or --set")
        text = reference_markdown()
    else:
        from fedsim.experiment import resolve_config

        cfg, _topology = resolve_config(args.config, args.overrides)
        text = cfg.to_yaml()
    if args.out:
        out = Path(args.out)
        if out.parent and not out.parent.is_dir():
            raise ConfigError(f"-o {out}: folder {out.parent} does not exist")
        out.write_text(text)
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)
    return 0


@dataclass
class Key:
    """One row of the reference."""

    path: str  # dotted, with [] for the entries of a list of sections: faults.dropout[].silo
    type: str
    default: str
    allowed: str
    meaning: str


@dataclass
class Section:
    """A heading of the reference: a section's keys (the top level's for path "")."""

    path: str
    summary: str  # the first sentence of the section dataclass's docstring
    note: str  # the comment on the field that holds the section, if any
    keys: list[Key]


def reference_sections() -> list[Section]:
    """Every section of ``ExperimentConfig`` in declaration order, each nested section after the
    one that holds it."""
    out: list[Section] = []
    _collect(ExperimentConfig(), "", "", out)
    return out


def _collect(obj: Any, path: str, note: str, out: list[Section]) -> None:
    cls = type(obj)
    docs = field_docs(cls)
    hints = field_hints(cls)
    section = Section(path, first_sentence(cls.__doc__), note, [])
    out.append(section)
    nested = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            nested.append((value, key, docs[f.name]))
            continue
        hint = hints.get(f.name, Any)
        section.keys.append(Key(key, type_name(hint), yaml_value(value), allowed(hint), docs[f.name]))
        item = section_list_item(hint)
        if item is not None:  # a list of sections: the keys of one entry
            entry, entry_docs, entry_hints = item(), field_docs(item), field_hints(item)
            for g in dataclasses.fields(item):
                h = entry_hints.get(g.name, Any)
                section.keys.append(Key(f"{key}[].{g.name}", type_name(h), yaml_value(getattr(entry, g.name)),
                                        allowed(h), entry_docs[g.name]))
    for value, key, doc in nested:
        _collect(value, key, doc, out)


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = inspect.cleandoc(doc or "").split("\n\n")[0]
    text = " ".join(paragraph.split())
    return re.split(r"(?<=[a-z0-9)`'\"]\.)\s+(?=[A-Z`])", text, maxsplit=1)[0]


def type_name(hint: Any) -> str:
    """A key's type in YAML words: int, float, str, bool, list, mapping, null, joined by "or"."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return type_name(typing.get_args(hint)[0])
    if origin is typing.Literal:
        return " or ".join(dict.fromkeys(type_name(type(a)) for a in typing.get_args(hint)))
    if origin in (typing.Union, types.UnionType):
        names = [n for a in typing.get_args(hint) for n in type_name(a).split(" or ")]
        return " or ".join(dict.fromkeys(names))
    if section_list_item(hint) is not None:
        return "list of mappings"
    if hint is type(None):
        return "null"
    if hint is Any:
        return "any"
    if hint is dict or origin is dict:
        return "mapping"
    if hint is list or origin is list:
        return "list"
    return getattr(hint, "__name__", str(hint))


def allowed(hint: Any) -> str:
    """A key's range or choices, from its type (``Range`` in ``Annotated``, ``Literal``), else ""."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(hint)
        rng = next((m for m in meta if isinstance(m, Range)), None)
        return rng.describe() if rng else allowed(base)
    if origin is typing.Literal:
        return ", ".join(yaml_value(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(part for a in typing.get_args(hint) if (part := allowed(a)))
    return ""


def yaml_value(value: Any) -> str:
    """A value as it is written in a config file."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value) if value != "" else "''"


def _text(text: str) -> str:
    """Markdown text: '<word' would start an HTML tag."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _cell(text: str) -> str:
    """Table-cell text: a '|' would also end the cell."""
    return _text(text).replace("|", r"\|")


def _code(text: str) -> str:
    """A code span in a table cell (no HTML inside one; only '|' needs escaping)."""
    return "`" + text.replace("|", r"\|") + "`" if text else ""


def _anchor(title: str) -> str:
    """The fragment GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def reference_markdown() -> str:
    """The config reference page (``docs/config-reference.md``)."""
    sections = reference_sections()
    titles = [s.path or "top level" for s in sections]
    lines = [
        "# Config reference",
        "",
        f"<!-- generated from the code by `{REGENERATE}`; do not edit by hand -->",
        "",
        "Every key of an experiment config (`fedsim.config.ExperimentConfig`), by dotted path: set it in a",
        "YAML file (`train: {lr: 0.01}`) or with `--set train.lr=0.01`. A default is what a key is when the",
        "config leaves it out (`fedsim/default.yaml`, the run without CONFIG, sets some differently;",
        "`fedsim config [CONFIG] [--set ...]` prints a run's resolved config). `KEY[].x` is key `x` of",
        "each entry of the list `KEY`. Unknown keys, values of the wrong type and values outside the",
        "range or choices are refused before any rank starts. `fedsim list` names what keys such as",
        "`algorithm`, `model.name` and `topology` can name.",
        "",
        "Sections: " + " · ".join(f"[{t}](#{_anchor(t)})" for t in titles),
    ]
    for section, title in zip(sections, titles):
        lines += ["", f"## {title}", "", _text(section.summary)]
        if section.note:
            lines += ["", _text(f"`{section.path}`: {section.note}")]
        lines += ["", "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        lines += [f"| `{k.path}` | {_cell(k.type)} | {_code(k.default)} | {_code(k.allowed)} | {_cell(k.meaning)} |"
                  for k in section.keys]
    return "\n".join(lines) + "\n"


__all__ = ["REFERENCE_FILE", "REGENERATE", "Key", "Section", "reference_markdown", "reference_sections"]
