"""What the benchmark tables share: repeating cells over experiment seeds and reporting each as
mean ± std, and a validation split carved from the silos' training data for choosing settings
(never the test set).

Seeds. A *cell* is one number of a table (a run's accuracy, a Dice score, …). ``over_seeds``
calls ``run_seed(seed)`` once per seed — it runs whatever that seed needs and returns
``{cell: value}`` — and gathers every cell's values into a :class:`Stat`::

    stats = over_seeds([0, 1, 2], lambda seed: {"fedavg": acc("fedavg", seed), "cll": acc("cll", seed)})
    stats["fedavg"].format()            # "42.3 ± 1.2" (values in [0, 1] shown as %)

The seed is the experiment seed (``seed:`` of the config: data, initial weights, batch order).
``std`` is the sample standard deviation (n − 1); one seed gives std 0.

Validation. ``carve_validation`` holds out a seeded share of every silo's training data (the
silos' own, possibly noisy, labels: what a practitioner has) and pools it;
``validation_curve`` trains an algorithm in this process (one rank: the same algorithm code as
a distributed run, which the equivalence tests check) on the rest and scores every silo on
the pool at the rounds asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: seed stream of the held-out validation indices (independent of every data stream)
VALIDATION_STREAM = 0x7A11D


@dataclass(frozen=True)
class Stat:
    """One table cell over several seeds."""

    values: tuple[float, ...] = field(default_factory=tuple)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n − 1); 0 for one value, nan for none."""
        if self.n < 2:
            return 0.0 if self.n else math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"m ± s"`` of the values times ``scale`` (default: fractions shown as %); "–" if empty."""
        if not self.n:
            return "–"
        return f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f}"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": list(self.values)}


def mean_std(values: Iterable[float | None]) -> Stat:
    """The :class:`Stat` of ``values``; None and NaN (a cell a run did not produce) are left out."""
    return Stat(tuple(float(v) for v in values if v is not None and v == v))


def over_seeds(seeds: Sequence[int], run_seed: Callable[[int], Mapping[Any, float | None]]) -> dict[Any, Stat]:
    """Call ``run_seed(seed)`` for every seed (in order) and return each cell's :class:`Stat`,
    in the order the cells first appear."""
    values: dict[Any, list[float | None]] = {}
    for seed in seeds:
        for cell, v in run_seed(seed).items():
            values.setdefault(cell, []).append(v)
    return {cell: mean_std(vs) for cell, vs in values.items()}


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` → a list of distinct non-negative seeds (argparse ``type=``)."""
    import argparse

    seeds: list[int] = []
    try:
        for part in (p.strip() for p in str(text).split(",")):
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0,1,2 or 0-4, got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds) or not seeds:
        raise argparse.ArgumentTypeError(f"seeds must be distinct integers >= 0, got {text!r}")
    return seeds


def seed_key(key: str, seed: int) -> str:
    """The run name of ``key`` at ``seed`` (``key_s<seed>``): one run directory per seed."""
    return f"{key}_s{seed}"


# ---- validation split ----------------------------------------------------------------------------

def carve_validation(train: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], Any]:
    """(the silos' training sets without their held-out part, the pooled held-out parts).
    Silo i holds out round(fraction · n_i) samples (at least 1, at most n_i − 1) chosen by a
    permutation from ``derive_seed(seed, VALIDATION_STREAM, i)``."""
    import torch

    from fedsim.data import SiloDataset, derive_seed

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    kept, held = [], []
    for i, ds in enumerate(train):
        g = torch.Generator().manual_seed(derive_seed(seed, VALIDATION_STREAM, i))
        perm = torch.randperm(len(ds), generator=g)
        k = min(max(1, round(fraction * len(ds))), len(ds) - 1)
        held.append(ds.subset(perm[:k].sort().values))
        kept.append(ds.subset(perm[k:].sort().values))
    return kept, SiloDataset.concat(held, "validation")


def validation_curve(cfg, report_rounds: Sequence[int], fraction: float = 0.25) -> dict[int, dict[str, float | None]]:
    """Train ``cfg`` (its ``rounds`` ignored: up to max(report_rounds)) in this process on the
    silos' data minus a held-out ``fraction``, and return, after each round in ``report_rounds``,
    ``{"mean_silo": mean over silos of each silo's score on the pooled held-out data, "silos":
    those scores, "foundation": Θ's score when the run forms one, else None}``."""
    import torch

    from fedsim.algorithms import build_algorithm
    from fedsim.data import load_federated
    from fedsim.distributed import set_determinism
    from fedsim.fminit import initial_state
    from fedsim.runner import forms_foundation, initial_model_factory, resolve_topology, training_topology
    from fedsim.runtime import Federation, load_state_tensors

    set_determinism(cfg.seed, threads=1)
    underlay = resolve_topology(cfg.topology)
    topology = training_topology(cfg, underlay)
    data = load_federated(cfg.data, underlay.num_silos, cfg.seed)
    train, val = carve_validation(data.train, fraction, cfg.seed)
    if cfg.scenario == "cll":
        from fedsim.data import SiloDataset

        train = [SiloDataset.concat(train, name="pooled")]
    fed = Federation(cfg, topology, 0, 1, torch.device("cpu"), train, val, data.num_classes,
                     initial_model_factory(cfg, data.num_classes, initial_state(cfg)))
    if cfg.scenario == "cll":
        for silo in fed.silos.values():
            silo.status = 1
    algo = build_algorithm(cfg.algorithm, fed)
    out: dict[int, dict[str, float | None]] = {}
    wanted = set(report_rounds)
    for k in range(max(wanted)):
        algo.round(k)
        if k + 1 in wanted:
            scores = [fed.evaluate(s.model)[1] for s in fed.silos.values()]
            theta = None
            if forms_foundation(cfg):
                model = fed.scratch_model()
                load_state_tensors(model, fed.aggregate())
                theta = fed.evaluate(model)[1]
            out[k + 1] = {"mean_silo": sum(scores) / len(scores), "silos": scores, "foundation": theta}
    return out
