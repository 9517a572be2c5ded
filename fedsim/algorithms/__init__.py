"""Federated algorithms, one file each; ``build_algorithm`` picks one by its config name."""

from __future__ import annotations

import importlib

from fedsim.algorithms.base import Algorithm

_REGISTRY = {
    "gossip": ("fedsim.algorithms.gossip", "Gossip"),
    "fedavg": ("fedsim.algorithms.fedavg", "FedAvg"),
    "fedefm": ("fedsim.algorithms.fedefm", "FedEFM"),
}


def build_algorithm(name: str, fed) -> Algorithm:
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(fed)


__all__ = ["Algorithm", "build_algorithm"]
