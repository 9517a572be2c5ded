"""fedsim.distributed's determinism switch against torch's own."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO


def test_set_determinism_sets_torchs_flags_without_importing_torchinductor():
    # the same kernel flags as torch.use_deterministic_algorithms(True, warn_only=True), in a
    # fresh interpreter, without loading TorchInductor and TorchDynamo (~1 s a process)
    code = """if True:
        import sys, torch
        from fedsim.distributed import set_determinism, use_deterministic_algorithms
        set_determinism(3, threads=1)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert "torch._inductor" not in sys.modules and "torch._dynamo" not in sys.modules
        use_deterministic_algorithms(False)
        assert not torch.are_deterministic_algorithms_enabled()
        # once TorchInductor is loaded (someone compiles here) its own flag follows too
        import torch._inductor.config as inductor_config
        use_deterministic_algorithms(True, warn_only=True)
        assert inductor_config.deterministic and torch.are_deterministic_algorithms_enabled()
    """
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
