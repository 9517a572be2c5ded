"""Federated algorithms, one file each; ``build_algorithm`` picks one by its config name."""

from __future__ import annotations

import importlib

from fedsim.algorithms.base import Algorithm

_REGISTRY = {
    "gossip": ("fedsim.algorithms.gossip", "Gossip"),
    "fedavg": ("fedsim.algorithms.fedavg", "FedAvg"),
    "fedefm": ("fedsim.algorithms.fedefm", "FedEFM"),
    "fedefm_released": ("fedsim.algorithms.fedefm_released", "FedEFMReleased"),
    "fedprox": ("fedsim.algorithms.fedprox", "FedProx"),
    "moon": ("fedsim.algorithms.moon", "MOON"),
    "feddf": ("fedsim.algorithms.feddf", "FedDF"),
    "fedmd": ("fedsim.algorithms.fedmd", "FedMD"),
    "mdhfl": ("fedsim.algorithms.mdhfl", "MDHFL"),
}


def algorithm_class(name: str) -> type[Algorithm]:
    """The class of a registered algorithm (imported on first use)."""
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def build_algorithm(name: str, fed) -> Algorithm:
    return algorithm_class(name)(fed)


__all__ = ["Algorithm", "algorithm_class", "build_algorithm"]
