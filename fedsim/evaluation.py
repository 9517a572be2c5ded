"""Evaluation, one component of the round loop: each silo's model and the foundation Θ on the
test set (and, with a validation split, Θ on all of it and each silo on its own part), on the rounds ``train.eval_every`` asks for."""

from __future__ import annotations

from fedsim.federation import Federation, load_state_tensors


class Evaluator:
    def __init__(self, fed: Federation, forms_foundation: bool) -> None:
        self.fed = fed
        self.cfg = fed.cfg
        self.forms_foundation = forms_foundation

    def due(self, k: int) -> bool:
        """Every ``train.eval_every`` rounds and always in the last (eval_every 0: only the last)."""
        every = self.cfg.train.eval_every
        return k == self.cfg.rounds - 1 or bool(every) and k % every == 0

    def silos(self, k: int) -> dict[int, tuple[float, float]]:
        """(test loss, test score) of each local silo's model, in evaluation rounds."""
        if not self.due(k):
            return {}
        return {i: self.fed.evaluate(s.model) for i, s in sorted(self.fed.silos.items())}

    def silos_validation(self, k: int) -> dict[int, float | None]:
        """Each local silo's score on its own validation split, in evaluation rounds (empty
        without a split)."""
        if not self.due(k) or self.fed.val_sets is None:
            return {}
        return {i: self.fed.evaluate_own_validation(i, s.model) for i, s in sorted(self.fed.silos.items())}

    def foundation(self, k: int) -> tuple[float | None, float | None]:
        """(test, validation) score of this round's Θ, the same on every rank (each evaluates the
        same all-reduce aggregate: no extra message); validation None without a split."""
        if not (self.cfg.train.eval_foundation and self.due(k) and self.forms_foundation):
            return None, None
        model = self.theta_model()
        return self.fed.evaluate(model)[1], self.fed.evaluate_validation(model)

    def theta_model(self):
        """Θ = Σ ϑ_i n_i θ_i / Σ ϑ_i n_i (a collective: every rank calls it) in a scratch model."""
        model = self.fed.scratch_model()
        load_state_tensors(model, self.fed.aggregate())
        return model
