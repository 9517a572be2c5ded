"""Your own algorithm from outside the package (``algorithm: "module:Class"``): the example in
launch/plugin_example/my_algorithm.py, run as documented (run.sh, 2 ranks), equals FedAvg with
server momentum re-computed here; a plug-in that does not import, is missing or is not an
Algorithm, and settings its Settings dataclass refuses, are one line and exit 2 before any rank.

The checks that need no process: tests/unit/algorithms/test_plugin_algorithm.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from fedsim.checkpoint import load_silo_states
from fedsim.config import load_config
from fedsim.data import SiloDataset
from fedsim.federation import BatchStream, make_optimizer, silo_seed, train_steps
from tests.harness import REPO

EXAMPLE = REPO / "launch" / "plugin_example"
SMALL = ["rounds=3", "train.local_steps=2", "data.args={samples: 16, size: 16}", "model.args={width: 4}"]
BETA, ETA = 0.5, 0.8  # not the defaults: the settings must reach the class


def run_example(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [a for s in [*SMALL, f"output_dir={tmp_path}", *extra] for a in ("--set", s)]
    return subprocess.run([str(EXAMPLE / "run.sh"), "--nproc", "2", "--quiet", *args], capture_output=True,
                          text=True, timeout=600, cwd=EXAMPLE.parents[1])


def test_the_example_is_fedavg_with_server_momentum(tmp_path, monkeypatch):
    out = run_example(tmp_path, "algorithm=my_algorithm:ServerMomentum", f"algorithm_args.momentum={BETA}",
                      f"algorithm_args.server_lr={ETA}")
    assert out.returncode == 0, out.stderr
    last = tmp_path / "plugin-example" / "checkpoints" / "round_2"
    got = {i: s["model"] for i, s in load_silo_states(last).items()}

    monkeypatch.syspath_prepend(str(EXAMPLE))
    import my_data
    import my_models

    torch.set_num_threads(1)  # as each spawned rank: the same sums in the same order
    cfg = load_config(EXAMPLE / "experiment.yaml", SMALL)
    train, _ = my_data.load(num_silos=4, seed=cfg.seed, **cfg.data.args)
    models, opts, streams = [], [], []
    for i in range(4):
        torch.manual_seed(cfg.seed)
        m = my_models.make_net(num_classes=10, in_channels=3, **cfg.model.args)
        ds = SiloDataset.from_tensors(torch.stack([x for x, _ in train[i]]), torch.tensor([int(y) for _, y in train[i]]))
        models.append(m)
        opts.append(make_optimizer(m, cfg))
        streams.append(BatchStream(ds, cfg.train.batch_size, silo_seed(cfg.seed, i), torch.device("cpu")))
    params = {name for name, _ in models[0].named_parameters()}
    theta = {k: v.detach().clone() for k, v in models[0].state_dict().items()}  # the server's Θ
    velocity = {k: torch.zeros_like(v) for k, v in theta.items() if k in params}
    for _ in range(cfg.rounds):
        for i in range(4):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        for key in theta:
            stacked = torch.stack([m.state_dict()[key].double() for m in models])
            mean = stacked.mean(0)
            if key in params:  # FedAvgM: v ← βv + (Θ − Θ̄), Θ ← Θ − ηv
                velocity[key] = BETA * velocity[key] + (theta[key] - mean.to(theta[key].dtype))
                theta[key] = theta[key] - ETA * velocity[key]
            else:  # buffers take the average (an integer counter rounded)
                theta[key] = (mean if theta[key].is_floating_point() else mean.round()).to(theta[key].dtype)
        for m in models:
            m.load_state_dict(theta)
    for i in range(4):
        assert list(got[i]) == list(theta)
        for key, value in theta.items():
            torch.testing.assert_close(got[i][key], value, atol=1e-6, rtol=0)
    foundation = torch.load(tmp_path / "plugin-example" / "foundation.pt")
    torch.testing.assert_close(foundation["classifier.weight"], theta["classifier.weight"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("setting, message", [
    ("algorithm=no_such_module_xyz:Alg", "algorithm: cannot import module 'no_such_module_xyz'"),
    ("algorithm=my_algorithm:Missing", "algorithm: module 'my_algorithm' has no attribute 'Missing'"),
    ("algorithm=my_algorithm:ServerMomentumSettings",
     "is a class ServerMomentumSettings, not a subclass of fedsim.algorithms.base.Algorithm"),
    ("algorithm=my_algorithm:load_state_tensors", "is a function"),
    ("algorithm_args.momentum=1.5", "config key 'algorithm_args.momentum' expects float >= 0 and < 1, got 1.5"),
    ("algorithm_args.nesterov=true", "unknown config key 'algorithm_args.nesterov' (known here: server_lr, momentum)"),
])
def test_a_plugin_that_cannot_run_is_one_line_and_exit_2(tmp_path, setting, message):
    extra = [setting] if setting.startswith("algorithm=") else ["algorithm=my_algorithm:ServerMomentum", setting]
    out = run_example(tmp_path, *extra)
    err = out.stderr.strip()
    assert out.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("fedsim: error: "), err
    assert message in err, err
    assert not any(tmp_path.iterdir())  # before any rank started, nothing written
