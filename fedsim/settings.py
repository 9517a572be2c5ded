"""The one config mechanism: dataclass sections filled from plain mappings (YAML, ``--set``),
checked against their type hints.

A field's type says what it accepts: ``int``, ``float`` (ints and ``3e-4``-style strings are
coerced), ``bool``, ``str``, ``list``, ``X | None``, ``Literal["a", "b"]`` (a choice) and
``Annotated[int, Range(ge=1)]`` (a number in a range). Unknown keys are errors (a typo must not
silently fall back to a default); a nested dataclass is a nested section and ``list[Section]`` a
list of them (each entry a mapping, named ``key[n]`` in errors). Every error names the dotted key,
the value and what is allowed.

A field's meaning is its comment in the dataclass's source (:func:`field_docs`, read by
``fedsim config --reference``): the comment at the end of its line, continued on the lines below
that start with ``#`` and two or more spaces; a field without one is documented by the comment
block right above it (``#`` or ``#:`` lines).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from fedsim.errors import ConfigError, FedsimError

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """A numeric range for ``Annotated[int | float, Range(...)]`` fields."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        parts = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if v is not None]
        return " and ".join(parts)

    def holds(self, v: float) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))


def choices(hint: Any) -> tuple | None:
    """The allowed values of a ``Literal`` hint (also inside ``X | None``), else None."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            found = choices(arg)
            if found:
                return found
    return None


def hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Annotated:
        base, *meta = typing.get_args(hint)
        rng = next((m for m in meta if isinstance(m, Range)), None)
        return f"{hint_name(base)} {rng.describe()}" if rng else hint_name(base)
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(hint_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def field_docs(cls: type) -> dict[str, str]:
    """Field name → its meaning, from the comments of ``cls``'s source (and of the dataclasses it
    derives from; the module docstring's rule): one line of text, "" for a field with none."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object and dataclasses.is_dataclass(klass):
            docs.update(_class_field_docs(klass))
    return {f.name: docs.get(f.name, "") for f in dataclasses.fields(cls)}


def _class_field_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # made at run time (make_dataclass): no source, no comments
        return {}
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.ClassDef) or node.name != cls.__name__:
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}  # line number → the comment's text, without '#' / '#:'
    own_line: set[int] = set()  # lines holding nothing but a comment
    continued: set[int] = set()  # comment-only lines whose text is indented past the '#'
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        row = tok.start[0]
        text = tok.string[2:] if tok.string.startswith("#:") else tok.string[1:]
        comments[row] = text.strip()
        if not lines[row - 1][: tok.start[1]].strip():
            own_line.add(row)
            if text.startswith("  ") and not tok.string.startswith("#:"):
                continued.add(row)
    docs: dict[str, str] = {}
    taken: set[int] = set()  # continuation lines already given to the field above them
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        end = stmt.end_lineno or stmt.lineno
        trailing = [comments[r] for r in range(stmt.lineno, end + 1) if r in comments]
        if trailing:
            row = end + 1
            while row in continued:
                trailing.append(comments[row])
                taken.add(row)
                row += 1
            docs[stmt.target.id] = " ".join(trailing)
            continue
        above: list[str] = []
        row = stmt.lineno - 1
        while row in own_line and row not in taken:
            above.insert(0, comments[row])
            row -= 1
        docs[stmt.target.id] = " ".join(above)
    return docs


def check_value(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits ``hint``, the value coerced: int → float, "3e-4" → 3e-4)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin is typing.Annotated:
        base, *meta = typing.get_args(hint)
        ok, value = check_value(value, base)
        if not ok:
            return False, value
        for m in meta:
            if isinstance(m, Range) and isinstance(value, (int, float)) and not m.holds(value):
                return False, value
        return True, value
    if origin is typing.Literal:
        return value in typing.get_args(hint) and not isinstance(value, bool) or value in [
            a for a in typing.get_args(hint) if isinstance(a, bool)], value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, v = check_value(value, arg)
            if ok:
                return True, v
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value == value, float(value)  # NaN is never a valid setting
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                v = float(value)
            except ValueError:
                return False, value
            return v == v, v
        return False, value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is str:
        return isinstance(value, str), value
    if origin is list or hint is list:
        return isinstance(value, list), value
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    return True, value


def field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def section_list_item(hint: Any) -> type | None:
    """The dataclass ``C`` of a ``list[C]`` hint (a list of sections), else None."""
    if typing.get_origin(hint) is list:
        args = typing.get_args(hint)
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def apply(obj: Any, data: Any, prefix: str = "", error: type[FedsimError] = ConfigError,
          retired: dict[str, str] | None = None) -> None:
    """Set ``obj``'s fields from the mapping ``data`` (recursing into nested dataclasses)."""
    if not isinstance(data, dict):
        raise error(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = field_hints(type(obj))
    for key, value in data.items():
        path = f"{prefix}{key}"
        if retired and path in retired:
            raise error(f"config key '{path}' was retired: {retired[path]}")
        if key not in fields:
            raise error(f"unknown config key '{path}' (known here: {', '.join(fields)})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            apply(current, value, f"{path}.", error, retired)
            continue
        hint = hints.get(key, Any)
        item = section_list_item(hint)
        if item is not None:  # a list of sections: each entry is filled and checked as one
            if not isinstance(value, list):
                names = ", ".join(f.name for f in dataclasses.fields(item))
                raise error(f"config key '{path}' expects a list of mappings (keys: {names}), got {value!r}")
            entries = []
            for n, entry in enumerate(value):
                section = item()
                apply(section, entry, f"{path}[{n}].", error, retired)
                entries.append(section)
            setattr(obj, key, entries)
            continue
        ok, coerced = check_value(value, hint)
        if not ok:
            raise error(f"config key '{path}' expects {hint_name(hint)}, got {value!r}")
        setattr(obj, key, coerced)


def section_from_dict(cls: type[T], d: dict | None, section: str, error: type[FedsimError] = ConfigError) -> T:
    """A ``cls`` section from a mapping: defaults, then ``d`` through :func:`apply`; runs
    ``validate()`` (cross-key checks) when the section defines it."""
    cfg: Any = cls()
    apply(cfg, dict(d or {}), f"{section}.", error)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg
