"""Federated algorithms, one file each; the registry below is the one list of their names.

Adding an algorithm: write ``fedsim/algorithms/NAME.py`` (a subclass of
:class:`fedsim.algorithms.base.Algorithm`), its settings dataclass, when it has settings, in
:mod:`fedsim.algorithms.settings`, and add one line here. Your own algorithm outside the package
is the same class in your module, named in the config as ``algorithm: "module:Class"``, its
settings a ``Settings`` class attribute filled from ``algorithm_args:``.

The registry names each algorithm's module without importing it: loading and checking a config
reads the names and the settings here and imports neither an algorithm nor torch. An algorithm's
module is imported when its class is asked for (:func:`algorithm_class`: the plan, the ranks).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import Any

from fedsim.algorithms.settings import (
    FedDFConfig,
    FedEFMConfig,
    FedEFMReleasedConfig,
    FedMDConfig,
    FedOptConfig,
    FedProxConfig,
    MDHFLConfig,
    MOONConfig,
    ScaffoldConfig,
)
from fedsim.errors import ConfigError
from fedsim.plugins import is_import_path, resolve
from fedsim.settings import section_from_dict

#: name → (module, class, settings dataclass or None; its config section is the name)
REGISTRY: dict[str, tuple[str, str, type | None]] = {
    "fedefm": ("fedsim.algorithms.fedefm", "FedEFM", FedEFMConfig),
    "fedefm_released": ("fedsim.algorithms.fedefm_released", "FedEFMReleased", FedEFMReleasedConfig),
    "gossip": ("fedsim.algorithms.gossip", "Gossip", None),
    "fedavg": ("fedsim.algorithms.fedavg", "FedAvg", None),
    "fedprox": ("fedsim.algorithms.fedprox", "FedProx", FedProxConfig),
    "moon": ("fedsim.algorithms.moon", "MOON", MOONConfig),
    "fedopt": ("fedsim.algorithms.fedopt", "FedOpt", FedOptConfig),
    "scaffold": ("fedsim.algorithms.scaffold", "Scaffold", ScaffoldConfig),
    "fednova": ("fedsim.algorithms.fednova", "FedNova", None),
    "feddf": ("fedsim.algorithms.feddf", "FedDF", FedDFConfig),
    "fedmd": ("fedsim.algorithms.fedmd", "FedMD", FedMDConfig),
    "mdhfl": ("fedsim.algorithms.mdhfl", "MDHFL", MDHFLConfig),
}
#: where a plug-in's base class lives (a plug-in that subclasses it has imported it)
BASE_MODULE = "fedsim.algorithms.base"


def algorithm_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def is_plugin(name: str) -> bool:
    """Whether ``algorithm:`` names your own class (``"module:Class"``) rather than a built-in."""
    return is_import_path(name)


def check_algorithm(name: str, key: str = "algorithm") -> None:
    """A one-line ConfigError naming ``key`` unless ``name`` is a registered algorithm (checked
    without importing it) or a plug-in class that imports and is an Algorithm."""
    if is_plugin(name):
        algorithm_class(name, key)
    elif name not in REGISTRY:
        where = "" if key == "algorithm" else f"{key}: "
        raise ConfigError(f"{where}unknown algorithm {name!r}; choose one of {', '.join(REGISTRY)} "
                          "or name your own class as 'module:Class'")


def algorithm_class(name: str, key: str = "algorithm"):
    """The class of a registered algorithm (its module imported on first use), or of a plug-in
    ``"module:Class"``: imported from the working directory or PYTHONPATH and checked to be a
    subclass of :class:`fedsim.algorithms.base.Algorithm` (a one-line ConfigError naming ``key``
    otherwise)."""
    if not is_plugin(name):
        check_algorithm(name, key)
        module, cls, _ = REGISTRY[name]
        return getattr(importlib.import_module(module), cls)
    found = resolve(name, key)
    base = sys.modules.get(BASE_MODULE)  # None: the plug-in did not import it, so it cannot subclass it
    if not (isinstance(found, type) and base is not None and issubclass(found, base.Algorithm)):
        what = f"class {found.__name__}" if isinstance(found, type) else f"{type(found).__name__} {name!r}"
        raise ConfigError(f"{key}: {name!r} is a {what}, not a subclass of fedsim.algorithms.base.Algorithm "
                          "(docs/extending.md, \"Write an algorithm\")")
    return found


def settings_class(name: str) -> type | None:
    """The settings dataclass of an algorithm: a built-in's ``NAME:`` config section, a plug-in's
    ``Settings`` class attribute (filled from ``algorithm_args:``), or None."""
    if is_plugin(name):
        return getattr(algorithm_class(name), "Settings", None)
    return REGISTRY[name][2]


def algorithm_settings(cfg, name: str | None = None) -> Any:
    """The filled settings of algorithm ``name`` (default: the run's): a built-in's section of
    ``cfg``, a plug-in's ``Settings`` from ``cfg.algorithm_args`` (checked as any config key:
    one line naming ``algorithm_args.KEY``), or None when it has none."""
    name = cfg.algorithm if name is None else name
    if not is_plugin(name):
        return getattr(cfg, name, None)
    settings = settings_class(name)
    if settings is None:
        if cfg.algorithm_args:
            raise ConfigError(f"algorithm_args: {name!r} has no Settings dataclass, so it takes no settings; remove "
                              "algorithm_args or give the class a Settings attribute (docs/extending.md, \"Write an algorithm\")")
        return None
    if not dataclasses.is_dataclass(settings):
        raise ConfigError(f"algorithm {name!r}: its Settings attribute must be a dataclass, got {settings!r}")
    return section_from_dict(settings, cfg.algorithm_args, "algorithm_args")


def build_algorithm(name: str, fed) -> Any:
    return algorithm_class(name)(fed)


__all__ = ["REGISTRY", "algorithm_class", "algorithm_names", "algorithm_settings", "build_algorithm",
           "check_algorithm", "is_plugin", "settings_class"]
