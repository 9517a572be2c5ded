"""Federated algorithms, one file each; the registry below is the one list of their names.

Adding an algorithm: write ``fedsim/algorithms/NAME.py`` (a subclass of
:class:`fedsim.algorithms.base.Algorithm`, with its settings dataclass beside it when it has
settings) and add one line here. This module imports nothing heavy, so the config can read the
names without importing any algorithm.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name → (module, class, settings dataclass or None; its config section is the name)
REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "fedefm": ("fedsim.algorithms.fedefm", "FedEFM", "FedEFMConfig"),
    "fedefm_released": ("fedsim.algorithms.fedefm_released", "FedEFMReleased", "FedEFMReleasedConfig"),
    "gossip": ("fedsim.algorithms.gossip", "Gossip", None),
    "fedavg": ("fedsim.algorithms.fedavg", "FedAvg", None),
    "fedprox": ("fedsim.algorithms.fedprox", "FedProx", "FedProxConfig"),
    "moon": ("fedsim.algorithms.moon", "MOON", "MOONConfig"),
    "fedopt": ("fedsim.algorithms.fedopt", "FedOpt", "FedOptConfig"),
    "scaffold": ("fedsim.algorithms.scaffold", "Scaffold", "ScaffoldConfig"),
    "fednova": ("fedsim.algorithms.fednova", "FedNova", None),
    "feddf": ("fedsim.algorithms.feddf", "FedDF", "FedDFConfig"),
    "fedmd": ("fedsim.algorithms.fedmd", "FedMD", "FedMDConfig"),
    "mdhfl": ("fedsim.algorithms.mdhfl", "MDHFL", "MDHFLConfig"),
}


def algorithm_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def algorithm_class(name: str):
    """The class of a registered algorithm (imported on first use)."""
    module, cls, _ = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def settings_class(name: str) -> type | None:
    """The settings dataclass of an algorithm (its ``NAME:`` config section), or None."""
    module, _, settings = REGISTRY[name]
    return getattr(importlib.import_module(module), settings) if settings else None


def build_algorithm(name: str, fed) -> Any:
    return algorithm_class(name)(fed)


def __getattr__(name: str) -> Any:
    if name == "Algorithm":  # the base class, without importing torch on `import fedsim.algorithms`
        from fedsim.algorithms.base import Algorithm

        return Algorithm
    raise AttributeError(name)


__all__ = ["REGISTRY", "algorithm_class", "algorithm_names", "build_algorithm", "settings_class"]
