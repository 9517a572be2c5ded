"""Building a config section (a dataclass) from a plain mapping, with unknown keys as errors."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from fedsim.errors import FedsimError

T = TypeVar("T")


def section_from_dict(cls: type[T], d: dict | None, section: str, error: type[FedsimError]) -> T:
    """``cls(**d)`` after rejecting keys it does not have; runs ``validate()`` when defined."""
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - names)
    if unknown:
        raise error(f"unknown {section} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    cfg: Any = cls(**d)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg
