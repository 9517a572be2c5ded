"""Evaluation, one component of the round loop: each silo's model and the foundation Θ on the
test set (and, with a validation split, Θ on all of it and each silo on its own part), on the
rounds ``train.eval_every`` asks for, on every silo or on a seeded sample of them
(``train.eval_silos``)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fedsim.config import TrainConfig
from fedsim.data import cell_counts, in_union
from fedsim.data.rank import RankData, silo_seed
from fedsim.distributed import all_reduce_sum
from fedsim.federation import Federation, load_state_tensors, state_tensors
from fedsim.losses import segmentation_loss
from fedsim.metrics import mean_dice
from fedsim.summary import UNION_KEYS

AUTO_ALL_UP_TO = 50  # eval_silos "auto": every silo up to this many, a sample above


@torch.no_grad()
def score_samples(model: nn.Module, dataset: Any, device: torch.device,
                  batch_size: int = 256) -> tuple[float, torch.Tensor]:
    """(summed cross-entropy, per-sample correctness as a CPU bool tensor) of ``model`` on ``dataset``."""
    model.eval()
    loss, hits = 0.0, []
    for start in range(0, len(dataset), batch_size):
        x = dataset.image_batch(slice(start, start + batch_size)).to(device)
        y = dataset.labels[start : start + batch_size].to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        hits.append((logits.argmax(1) == y).cpu())
    return loss, torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def evaluate(model: nn.Module, dataset: Any, device: torch.device, batch_size: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``dataset``."""
    loss, hits = score_samples(model, dataset, device, batch_size)
    n = max(len(dataset), 1)
    return loss / n, int(hits.sum()) / n


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset: Any, device: torch.device,
                          batch_size: int = 64) -> tuple[float, float]:
    """(mean segmentation loss per image, mean foreground Dice over every pixel of the set, as
    :func:`fedsim.metrics.mean_dice` — the downstream stage's "dice") of a U-Net on the masks."""
    model.eval()
    loss, preds = 0.0, []
    for start in range(0, len(dataset), batch_size):
        x = dataset.image_batch(slice(start, start + batch_size)).to(device)
        y = dataset.mask_batch(slice(start, start + batch_size)).to(device)
        logits = model(x)
        loss += segmentation_loss(logits, y).item() * x.shape[0]
        preds.append(logits.argmax(1).cpu())
    if not preds:
        return 0.0, float("nan")
    return loss / len(dataset), mean_dice(torch.cat(preds), dataset.masks.long().cpu(), num_classes=logits.shape[1])


def _same_state(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
                                    for x, y in zip(a, b))


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


def union_split(fed: Federation, test_set, data_kind: str) -> torch.Tensor | None:
    """Which test samples lie in a (domain, class) cell that some silo's training data holds (a
    collective: every rank adds its silos' cell counts), or None where the data have no such
    split (only synthetic data carry a true domain on every sample; segmentation has no class).

    Every silo counts, ϑ_i = 0 and crashed ones too: the split describes the data the federation
    holds, not who contributes to Θ, so runs with and without faults score the same cells."""
    if data_kind != "synthetic" or fed.segmentation or test_set.domain is None:
        return None
    held = cell_counts((s.data for s in fed.hosted.values()), fed.num_classes)
    held = all_reduce_sum(held.to(fed.device, torch.float64)).cpu()
    return in_union(test_set, held)


def split_accuracy(hits: torch.Tensor, inside: torch.Tensor) -> dict[str, float | None]:
    """Accuracy on the in-union and on the out-of-union test samples (None for an empty side):
    the two weighted by their sample counts give the accuracy over the whole test set."""
    out: dict[str, float | None] = {}
    for key, side in zip(UNION_KEYS, (inside, ~inside)):
        n = int(side.sum())
        out[key] = int(hits[side].sum()) / n if n else None
    return out


class Evaluator:
    """Scores of the silos' models and of Θ on this rank: the test set, its silos' validation
    splits, the rounds that evaluate and the silos they sample."""

    def __init__(self, fed: Federation, data: RankData, forms_foundation: bool, train: TrainConfig, rounds: int,
                 seed: int, data_kind: str) -> None:
        """``train``: the ``train:`` section (``eval_every``, ``eval_silos``, ``eval_foundation``);
        ``rounds`` (the last one always evaluates), ``seed`` (the sampled silos) and ``data_kind``
        (``data.kind``: only synthetic data split the test set by the silos' cells). Built by
        :func:`fedsim.trainer.build_evaluator`."""
        self.fed = fed
        self.train, self.rounds, self.seed = train, rounds, seed
        self.device = fed.device
        self.segmentation = fed.segmentation
        self.forms_foundation = forms_foundation
        self.test_set = data.test
        #: this rank's silos' validation sets (carved from their training data), or None
        self.val_sets = {i: data.val[i] for i in fed.local_ids} if data.val is not None else None
        #: seconds this rank spent evaluating since the last :meth:`take_seconds`
        self.seconds = 0.0
        #: test samples in the union of the silos' (domain, class) cells (None: no such split)
        self.in_union = union_split(fed, self.test_set, data_kind) if forms_foundation else None
        #: (state, scores, hits) of the last model scored on the test set: one equal to it is not scored again
        self._last_eval: tuple[list[torch.Tensor], tuple[float, float], torch.Tensor | None] | None = None

    def due(self, k: int) -> bool:
        """Every ``train.eval_every`` rounds and always in the last (eval_every 0: only the last)."""
        every = self.train.eval_every
        return k == self.rounds - 1 or bool(every) and k % every == 0

    def sample(self, k: int) -> list[int]:
        """Every silo (of every rank) whose model round ``k`` scores, when it is present."""
        return eval_sample(self.train.eval_silos, self.fed.topology.num_silos, self.seed, k)

    def silos(self, k: int) -> dict[int, tuple[float, float]]:
        """(test loss, test score) of each sampled local silo's model, in evaluation rounds; all
        of them are scored batch by batch (each test batch decoded once for every model)."""
        if not self.due(k):
            return {}
        t0 = time.perf_counter()
        present = self.fed.silos
        models = {i: present[i].model for i in self.sample(k) if i in present}
        scores = self.score_many(models)
        self.seconds += time.perf_counter() - t0
        return scores

    def silos_validation(self, k: int) -> dict[int, float | None]:
        """Each sampled local silo's score on its own validation split, in evaluation rounds
        (empty without a split)."""
        if not self.due(k) or self.val_sets is None:
            return {}
        t0 = time.perf_counter()
        present = self.fed.silos
        out = {i: self.own_validation(i, present[i].model) for i in self.sample(k) if i in present}
        self.seconds += time.perf_counter() - t0
        return out

    def foundation(self, k: int) -> tuple[float | None, float | None, dict[str, float | None]]:
        """(test, validation, :meth:`union_scores`) of this round's Θ, the same on every rank (each
        evaluates the same all-reduce aggregate: no extra message); validation None without a
        split, the union scores empty where the data have none."""
        if not (self.train.eval_foundation and self.due(k) and self.forms_foundation):
            return None, None, {}
        t0 = time.perf_counter()
        model = self.theta_model()
        val = self.validation(model)
        out = self.score(model)[1], None if val is None else val[1], self.union_scores(model)
        self.seconds += time.perf_counter() - t0
        return out

    def union_scores(self, model) -> dict[str, float | None]:
        """``model``'s accuracy on the test samples inside and outside the union of the silos'
        training cells, from the predictions of its :meth:`score` pass; empty where
        the data have no such split."""
        if self.in_union is None:
            return {}
        return split_accuracy(self.test_hits(model), self.in_union)

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

    def own_validation(self, i: int, model: nn.Module) -> float | None:
        """``model``'s score on silo ``i``'s own validation split (no collective: what the silo
        itself can measure, e.g. to choose settings for models that are never averaged), or None
        without a split."""
        ds = self.val_sets.get(i) if self.val_sets is not None else None
        if ds is None or not len(ds):
            return None
        return (evaluate_segmentation(model, ds, self.device) if self.segmentation
                else evaluate(model, ds, self.device))[1]

    def validation(self, model: nn.Module) -> tuple[float, float] | None:
        """(loss, score) of ``model`` on the union of every silo's validation split (each rank
        scores its own silos' parts; one all-reduce of the sums), or None without a validation
        split. The loss ranks settings whose predictions on a small split are the same."""
        if self.val_sets is None:
            return None
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        for ds in self.val_sets.values():
            if len(ds):
                loss, score = (evaluate_segmentation(model, ds, self.device) if self.segmentation
                               else evaluate(model, ds, self.device))
                totals += torch.tensor([loss * len(ds), score * len(ds), len(ds)], dtype=torch.float64,
                                       device=self.device)
        totals = all_reduce_sum(totals)
        return (float(totals[0] / totals[2]), float(totals[1] / totals[2])) if totals[2] > 0 else None

    def score(self, model: nn.Module) -> tuple[float, float]:
        """(test loss, test score): accuracy, or mean foreground Dice for ``task: segmentation``.

        A model whose state equals the last one evaluated is not evaluated again: after FedAvg
        every silo holds Θ, and the round's and the run's Θ scores are the same model too (6
        passes over the test set became 1; comparing states costs a tiny fraction of a pass)."""
        state = state_tensors(model)
        last = self._last_eval
        if last is not None and len(last[0]) == len(state) and all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(last[0], state)):
            return last[1]
        hits = None
        if self.segmentation:
            result = evaluate_segmentation(model, self.test_set, self.device)
        else:
            loss, hits = score_samples(model, self.test_set, self.device)
            n = max(len(self.test_set), 1)
            result = (loss / n, int(hits.sum()) / n)
        self._last_eval = ([t.detach().clone() for t in state], result, hits)
        return result

    def test_hits(self, model: nn.Module) -> torch.Tensor | None:
        """Which test samples ``model`` classifies correctly (bool, CPU), from the pass that gave
        its :meth:`score` (a model just evaluated is not run again), so a score over a
        subset of the test set and the score over all of it count the same predictions; None for
        ``task: segmentation``."""
        if self.segmentation:
            return None
        self.score(model)
        return self._last_eval[2]

    def score_many(self, models: dict[int, nn.Module]) -> dict[int, tuple[float, float]]:
        """:meth:`score` of several models, with the same numbers: each test batch is decoded
        once and scored by every model in turn, and a model whose state equals the one before it
        (FedAvg: every silo holds Θ) or the last one evaluated shares its score."""
        if self.segmentation:
            return {i: self.score(m) for i, m in sorted(models.items())}
        out: dict[int, tuple[float, float]] = {}
        todo: dict[int, nn.Module] = {}
        same_as: dict[int, int] = {}
        prev: tuple[int, list[torch.Tensor]] | None = None
        last = self._last_eval
        for i in sorted(models):
            state = state_tensors(models[i])
            if prev is not None and _same_state(prev[1], state):
                same_as[i] = prev[0]
                continue
            prev = (i, state)
            if last is not None and _same_state(last[0], state):
                out[i] = last[1]
            else:
                todo[i] = models[i]
        if todo:
            test, n = self.test_set, max(len(self.test_set), 1)
            loss = dict.fromkeys(todo, 0.0)
            hits: dict[int, list[torch.Tensor]] = {i: [] for i in todo}
            for m in todo.values():
                m.eval()
            with torch.no_grad():
                for start in range(0, len(test), 256):  # evaluate()'s batches: the same sums
                    x = test.image_batch(slice(start, start + 256)).to(self.device)
                    y = test.labels[start : start + 256].to(self.device)
                    for i, m in todo.items():
                        logits = m(x)
                        loss[i] += F.cross_entropy(logits, y, reduction="sum").item()
                        hits[i].append((logits.argmax(1) == y).cpu())
            for i in todo:
                hits[i] = torch.cat(hits[i]) if hits[i] else torch.zeros(0, dtype=torch.bool)
                out[i] = (loss[i] / n, int(hits[i].sum()) / n)
            i = max(todo)
            self._last_eval = ([t.detach().clone() for t in state_tensors(todo[i])], out[i], hits[i])
        for i, j in same_as.items():
            out[i] = out[j]
        return dict(sorted(out.items()))
