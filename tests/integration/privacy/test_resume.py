"""--resume continues a private, compressed run exactly: the accountants, the DP noise and
Poisson sampling streams, the links' coded references and the server's residuals are part of the
checkpoint (and a private run does not depend on placement: the resumed half runs on 1 rank)."""

from __future__ import annotations

import json

import torch

from tests.harness import CLI_TINY, sets
from tests.integration.harness import fedsim

RUN = CLI_TINY + ["algorithm=fedefm", "scenario=cfl", "emd.backend=uniform", "fedefm.overseas_steps=1",
              "fedefm.distill_steps=1", "privacy.mode=sample", "privacy.noise_multiplier=1.0", "privacy.delta=1e-3",
              "compression.kind=topk", "compression.ratio=0.2"]


def test_private_compressed_run_resumes_exactly(tmp_path):
    straight = fedsim("run", "--nproc", "2", "--quiet", *sets(RUN + ["rounds=3", f"output_dir={tmp_path}", "name=a"]))
    assert straight.returncode == 0, straight.stderr
    first = fedsim("run", "--nproc", "2", "--quiet", *sets(RUN + ["rounds=2", f"output_dir={tmp_path}", "name=b"]))
    assert first.returncode == 0, first.stderr
    again = fedsim("run", "--nproc", "1", "--quiet", "--resume",
                   *sets(RUN + ["rounds=3", f"output_dir={tmp_path}", "name=b"]))
    assert again.returncode == 0, again.stderr
    a, b = torch.load(tmp_path / "a" / "foundation.pt"), torch.load(tmp_path / "b" / "foundation.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("a", "b"))
    assert sa["epsilon_by_round"] == sb["epsilon_by_round"] and sa["epsilon"] > 0
    assert sa["total_bytes"] == sb["total_bytes"]
