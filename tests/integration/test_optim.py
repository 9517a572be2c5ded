"""fedsim.optim in a fresh interpreter (the unit tests of the optimisers: tests/unit/test_optim.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO


def test_building_stepping_and_saving_an_optimiser_imports_no_torchdynamo():
    # what a rank does with its optimisers, in a fresh interpreter: TorchDynamo (~1 s, ~160 MB a
    # process) stays out; torch's own optimiser would import it at construction
    code = """if True:
        import sys, torch
        from fedsim.config import load_config
        from fedsim.optim import make_optimizer
        for kind in ("adam", "adamw", "sgd"):
            net = torch.nn.Linear(3, 2)
            opt = make_optimizer(net, load_config(None, [f"train.optimizer={kind}", "train.lr_schedule=sqrt"]))
            opt.zero_grad()
            net(torch.randn(4, 3)).sum().backward()
            opt.step()
            opt.load_state_dict(opt.state_dict())
        assert "torch._dynamo" not in sys.modules
        torch.optim.Adam(net.parameters())
        assert "torch._dynamo" in sys.modules  # the check can see it
    """
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
