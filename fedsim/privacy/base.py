"""What the federation asks of its privacy component; :class:`NoPrivacy` is the answer of a run
that is not private, and the private modes (:mod:`fedsim.privacy.dpsgd`,
:mod:`fedsim.privacy.client`) override it."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from fedsim.data.rank import BatchStream


class NoPrivacy:
    """What the federation asks of its privacy component, when the run is not private."""

    mode = "none"
    #: whether every loss must be a mean of per-sample terms (DP-SGD): FedEFM then weights its
    #: teachers per sample instead of per batch
    per_sample = False

    def batch_stream(self, silo: int, dataset, batch_size: int, seed: int, device, target: str):
        return BatchStream(dataset, batch_size, seed, device, target)

    def session(self, model, optimizer, owner: int):
        """A context giving the optimizer to step ``model`` with on silo ``owner``'s data."""
        return nullcontext(optimizer)

    def record(self, silo: int) -> dict[str, Any]:
        """What this round's metrics record of ``silo`` adds (``epsilon``, …)."""
        return {}

    def silo_state(self, silo: int) -> dict[str, Any]:
        return {}

    def load_silo_state(self, silo: int, state: dict[str, Any]) -> None:
        pass
