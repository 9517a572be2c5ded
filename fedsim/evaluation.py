"""Evaluation, one component of the round loop: each silo's model and the foundation Θ on the
test set (and, with a validation split, Θ on all of it and each silo on its own part), on the
rounds ``train.eval_every`` asks for, on every silo or on a seeded sample of them
(``train.eval_silos``)."""

from __future__ import annotations

import math
import time

import torch

from fedsim.data import cell_counts, in_union
from fedsim.distributed import all_reduce_sum
from fedsim.federation import Federation, load_state_tensors, silo_seed
from fedsim.summary import UNION_KEYS

AUTO_ALL_UP_TO = 50  # eval_silos "auto": every silo up to this many, a sample above


def eval_sample_size(setting: str | int, num_silos: int) -> int:
    """How many silos an evaluation round scores under ``train.eval_silos``."""
    if setting == "all":
        return num_silos
    if setting == "auto":
        return num_silos if num_silos <= AUTO_ALL_UP_TO else max(10, min(AUTO_ALL_UP_TO, math.ceil(num_silos / 10)))
    return min(int(setting), num_silos)


def eval_sample(setting: str | int, num_silos: int, seed: int, k: int) -> list[int]:
    """The silos scored in round ``k``: all, or a sample drawn from (seed, k) alone, so every
    rank (and a resumed run) draws the same one."""
    size = eval_sample_size(setting, num_silos)
    if size >= num_silos:
        return list(range(num_silos))
    g = torch.Generator().manual_seed(silo_seed(seed, 0, stream=0xE7A1 + k))
    return sorted(torch.randperm(num_silos, generator=g)[:size].tolist())


def union_split(fed: Federation) -> torch.Tensor | None:
    """Which test samples lie in a (domain, class) cell that some silo's training data holds (a
    collective: every rank adds its silos' cell counts), or None where the data have no such
    split (only synthetic data carry a true domain on every sample; segmentation has no class).

    Every silo counts, ϑ_i = 0 and crashed ones too: the split describes the data the federation
    holds, not who contributes to Θ, so runs with and without faults score the same cells."""
    if fed.cfg.data.kind != "synthetic" or fed.segmentation or fed.test_set.domain is None:
        return None
    held = cell_counts((s.data for s in fed.hosted.values()), fed.num_classes)
    held = all_reduce_sum(held.to(fed.device, torch.float64)).cpu()
    return in_union(fed.test_set, held)


def split_accuracy(hits: torch.Tensor, inside: torch.Tensor) -> dict[str, float | None]:
    """Accuracy on the in-union and on the out-of-union test samples (None for an empty side):
    the two weighted by their sample counts give the accuracy over the whole test set."""
    out: dict[str, float | None] = {}
    for key, side in zip(UNION_KEYS, (inside, ~inside)):
        n = int(side.sum())
        out[key] = int(hits[side].sum()) / n if n else None
    return out


class Evaluator:
    def __init__(self, fed: Federation, forms_foundation: bool) -> None:
        self.fed = fed
        self.cfg = fed.cfg
        self.forms_foundation = forms_foundation
        #: seconds this rank spent evaluating since the last :meth:`take_seconds`
        self.seconds = 0.0
        #: test samples in the union of the silos' (domain, class) cells (None: no such split)
        self.in_union = union_split(fed) if forms_foundation else None

    def due(self, k: int) -> bool:
        """Every ``train.eval_every`` rounds and always in the last (eval_every 0: only the last)."""
        every = self.cfg.train.eval_every
        return k == self.cfg.rounds - 1 or bool(every) and k % every == 0

    def sample(self, k: int) -> list[int]:
        """Every silo (of every rank) whose model round ``k`` scores, when it is present."""
        return eval_sample(self.cfg.train.eval_silos, self.fed.topology.num_silos, self.cfg.seed, k)

    def silos(self, k: int) -> dict[int, tuple[float, float]]:
        """(test loss, test score) of each sampled local silo's model, in evaluation rounds; all
        of them are scored batch by batch (each test batch decoded once for every model)."""
        if not self.due(k):
            return {}
        t0 = time.perf_counter()
        present = self.fed.silos
        models = {i: present[i].model for i in self.sample(k) if i in present}
        scores = self.fed.evaluate_many(models)
        self.seconds += time.perf_counter() - t0
        return scores

    def silos_validation(self, k: int) -> dict[int, float | None]:
        """Each sampled local silo's score on its own validation split, in evaluation rounds
        (empty without a split)."""
        if not self.due(k) or self.fed.val_sets is None:
            return {}
        t0 = time.perf_counter()
        present = self.fed.silos
        out = {i: self.fed.evaluate_own_validation(i, present[i].model) for i in self.sample(k) if i in present}
        self.seconds += time.perf_counter() - t0
        return out

    def foundation(self, k: int) -> tuple[float | None, float | None, dict[str, float | None]]:
        """(test, validation, :meth:`union_scores`) of this round's Θ, the same on every rank (each
        evaluates the same all-reduce aggregate: no extra message); validation None without a
        split, the union scores empty where the data have none."""
        if not (self.cfg.train.eval_foundation and self.due(k) and self.forms_foundation):
            return None, None, {}
        t0 = time.perf_counter()
        model = self.theta_model()
        val = self.fed.evaluate_validation(model)
        out = self.fed.evaluate(model)[1], None if val is None else val[1], self.union_scores(model)
        self.seconds += time.perf_counter() - t0
        return out

    def union_scores(self, model) -> dict[str, float | None]:
        """``model``'s accuracy on the test samples inside and outside the union of the silos'
        training cells, from the predictions of its :meth:`Federation.evaluate` pass; empty where
        the data have no such split."""
        if self.in_union is None:
            return {}
        return split_accuracy(self.fed.test_hits(model), self.in_union)

    def union_counts(self) -> dict[str, int | None]:
        """Test samples inside and outside the union (None where the data have no such split)."""
        n_in = None if self.in_union is None else int(self.in_union.sum())
        return {"test_samples_in_union": n_in,
                "test_samples_out_of_union": None if n_in is None else len(self.in_union) - n_in}

    def take_seconds(self) -> float:
        out, self.seconds = self.seconds, 0.0
        return out

    def theta_model(self):
        """Θ = Σ ϑ_i n_i θ_i / Σ ϑ_i n_i (a collective: every rank calls it) in a scratch model."""
        model = self.fed.scratch_model()
        load_state_tensors(model, self.fed.aggregate())
        return model
