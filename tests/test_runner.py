"""The runner's foundation model Θ honours the accumulation status ϑ."""

from __future__ import annotations

import torch

from .algorithms.test_equivalence import run_distributed


def test_a_silo_with_status_zero_does_not_contribute_to_the_foundation(tmp_path):
    overrides = ["algorithm=fedefm", "rounds=2", "fedefm.overseas_steps=1", "fedefm.distill_steps=1",
                 "emd.grid=2", "accumulation_status=[1, 0, 1, 1]", "name=theta"]
    silos = run_distributed(tmp_path, overrides)
    foundation = list(torch.load(tmp_path / "theta" / "foundation.pt").values())
    for k, theta in enumerate(foundation):
        if not theta.is_floating_point():
            continue
        kept = torch.stack([silos[i][k].double() for i in (0, 2, 3)]).mean(0).to(theta.dtype)
        every = torch.stack([silos[i][k].double() for i in range(4)]).mean(0).to(theta.dtype)
        assert torch.equal(theta, kept)
        if k == 0:
            assert not torch.equal(theta, every)  # silo 1 really is different and left out
