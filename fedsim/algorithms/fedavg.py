"""FedAvg (client–server): local SGD steps, then every silo takes the server's weighted average
Θ = Σ ϑ_i n_i θ_i / Σ ϑ_i n_i. The server holds no data; traffic is counted on the star
through it (each silo uploads its model and downloads Θ; coded with ``compression``, clipped and
noised with ``privacy.mode: client`` — :meth:`fedsim.federation.Federation.server_round`)."""

from __future__ import annotations

from fedsim.algorithms.base import Algorithm
from fedsim.federation import load_state_tensors


class FedAvg(Algorithm):
    name = "fedavg"
    title = "FedAvg"
    natural_scenario = "cfl"
    scenarios = ("cfl", "cll", "standalone")
    tasks = ("classification", "segmentation")
    privacy_modes = ("sample", "client")

    def round(self, k: int) -> dict[int, float]:
        losses = self.local_training()
        if not self.exchanges:
            return losses
        theta = self.fed.server_round(k)
        for silo in self.fed.silos.values():
            load_state_tensors(silo.model, theta)
        return losses
