"""Python plug-ins (a model factory and a data factory defined in tests/plugin_fixtures.py) run on
real spawned gloo ranks and equal a sequential re-computation written here; a bad plug-in is one
line and exit 2.

The checks that need no process: tests/unit/test_plugins.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedsim.checkpoint import load_silo_states
from fedsim.cli import main
from fedsim.config import load_config
from fedsim.data import SiloDataset
from fedsim.errors import ConfigError
from fedsim.federation import BatchStream, make_optimizer, silo_seed, train_steps
from fedsim.launch import spawn
from fedsim.models import ModelConfig, build_model, features_of, logits_and_features
from fedsim.plan import build_plan, scenario_for
from fedsim.topology import resolve_topology
from fedsim.trainer import run_rank
from tests import plugin_fixtures as fx
from tests.harness import PLUGIN, REPO, assert_bad_plugin_is_one_line


def run(tmp_path, overrides: list[str], nproc: int = 2):
    cfg = load_config(None, PLUGIN + overrides + [f"output_dir={tmp_path}"])
    cfg.scenario = scenario_for(cfg)
    run_dir = tmp_path / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = spawn(run_rank, nproc, build_plan(cfg, run_dir, nproc))[0]
    last = run_dir / "checkpoints" / f"round_{cfg.rounds - 1}"
    models = {i: s["model"] for i, s in load_silo_states(last).items()}
    return cfg, summary, models


def reference_setup(cfg):
    """Silos as a user would build them by hand: the factory's datasets stacked item by item,
    the factory's model under the run's seed."""
    topo = resolve_topology(cfg.topology)
    train, test = fx.load(num_silos=topo.num_silos, seed=cfg.seed, **cfg.data.args)

    def stack(ds):
        return SiloDataset.from_tensors(torch.stack([ds[i][0] for i in range(len(ds))]),
                                        torch.tensor([ds[i][1] for i in range(len(ds))]))

    models, opts, streams = [], [], []
    for i in range(topo.num_silos):
        torch.manual_seed(cfg.seed)
        m = fx.make_net(num_classes=3, in_channels=3, **cfg.model.args)
        models.append(m)
        opts.append(make_optimizer(m, cfg))
        streams.append(BatchStream(stack(train[i]), cfg.train.batch_size, silo_seed(cfg.seed, i), torch.device("cpu")))
    return topo, models, opts, streams, stack(test)


def flat(model):
    return torch.cat([t.detach().reshape(-1) for t in model.state_dict().values()])


def assign(model, vector):
    offset = 0
    with torch.no_grad():
        for t in model.state_dict().values():
            t.copy_(vector[offset: offset + t.numel()].view(t.shape))
            offset += t.numel()


def accuracy(model, test) -> float:
    with torch.no_grad():
        return int((model(test.images).argmax(1) == test.labels).sum()) / len(test)


@pytest.mark.parametrize("algorithm", ["fedavg", "gossip"])
def test_plugin_model_and_data_equal_a_sequential_run(tmp_path, algorithm):
    cfg, summary, got = run(tmp_path, [f"algorithm={algorithm}", f"name={algorithm}"])
    topo, models, opts, streams, test = reference_setup(cfg)
    n = topo.num_silos
    if algorithm == "gossip":  # Metropolis–Hastings weights on the ring
        A = np.zeros((n, n))
        for j, i in topo.arcs:
            A[i, j] = 1
        deg = A.sum(1)
        W = np.where(A > 0, 1.0 / (1 + np.maximum.outer(deg, deg)), 0.0)
        W[np.diag_indices(n)] = 1 - W.sum(1)
    else:
        W = np.full((n, n), 1.0 / n)
    for _ in range(cfg.rounds):
        for i in range(n):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps)
        mixed = torch.from_numpy(W) @ torch.stack([flat(m).double() for m in models])
        for i in range(n):
            assign(models[i], mixed[i].float())
    for i in range(n):
        assert list(got[i]) == list(models[i].state_dict())  # the user's own parameter names
        for a, b in zip(got[i].values(), models[i].state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    theta = fx.make_net(3, 3, **cfg.model.args)
    assign(theta, torch.stack([flat(m).double() for m in models]).mean(0).float())
    assert summary["foundation_accuracy"] == pytest.approx(accuracy(theta, test), abs=1e-9)
    assert got[0]["fc.weight"].shape[0] == 3  # num_classes reached the factory


def test_features_layer_hook_equals_a_features_method(tmp_path):
    """MOON reads the feature map: hooked by model.features_layer or given by a features(x)
    method, the same map gives the same run (up to float rounding: without head(f) the method
    path runs the network twice, so its gradients are summed in another order)."""
    common = ["algorithm=moon", "moon.mu=5", "model.args={width: 4}"]
    _, _, hooked = run(tmp_path, common + ["name=hooked", "model.features_layer=body"])
    _, _, method = run(tmp_path, common + ["name=method", "model.name=tests.plugin_fixtures:make_net_with_features"])
    for i in hooked:
        for a, b in zip(hooked[i].values(), method[i].values()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    plain = fx.make_net(3, 3, width=4)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 12)
    hooked_model = build_model(ModelConfig(name="tests.plugin_fixtures:make_net", args={"width": 4},
                                           features_layer="body"), 3, 3)
    hooked_model.load_state_dict(plain.state_dict())
    logits, feats = logits_and_features(hooked_model, x)
    assert torch.equal(logits, plain(x)) and torch.equal(feats, plain.body(x))
    assert torch.equal(features_of(hooked_model, x), plain.body(x))
    with pytest.raises(ConfigError, match="'nobody' is not a submodule.*body"):
        build_model(ModelConfig(name="tests.plugin_fixtures:make_net", features_layer="nobody"), 3, 3)




@pytest.mark.parametrize("case, message", [
    ("data.factory=tests.plugin_fixtures:load_bad_shape", "tests.plugin_fixtures:load_bad_shape returned a test set"),
    ("data.factory=tests.plugin_fixtures:load_flat_items", "x must be a float tensor C×H×W"),
    ("model.name=tests.plugin_fixtures:not_a_module", "tests.plugin_fixtures:not_a_module returned a str"),
    ("model.name=tests.plugin_fixtures:make_wrong_head", "it must give logits of shape (2, 3)"),
    ("algorithm=fedefm", "algorithm fedefm needs a dense feature map"),
    ("model.args={depth: 3}", "make_net(num_classes=3, in_channels=3, depth=3) raised TypeError"),
])
def test_a_bad_plugin_is_one_line_and_exit_2(tmp_path, capsys, case, message):
    """What a plug-in returns is checked on the ranks (they build the data and the model): still one line, exit 2."""
    assert_bad_plugin_is_one_line(tmp_path, capsys, case, message)


def test_plugin_run_through_the_cli_from_the_working_directory(tmp_path, monkeypatch):
    """The documented use: a module in the working directory, `fedsim run CONFIG`."""
    # a module of its own name: a run in this process (rank 0 is this process) may already have
    # imported launch/plugin_example/my_models.py under the name my_models
    (tmp_path / "cwd_models.py").write_text(
        "from tests.plugin_fixtures import TinyNet\n"
        "def make_net(num_classes, in_channels, width=3):\n    return TinyNet(num_classes, in_channels, width)\n")
    (tmp_path / "exp.yaml").write_text(
        "algorithm: fedavg\nrounds: 1\ntopology: ring-4\ntrain: {local_steps: 1, batch_size: 8}\n"
        "data: {kind: python, factory: 'tests.plugin_fixtures:load', args: {n: 16, classes: 4}}\n"
        "model: {name: 'cwd_models:make_net', args: {width: 3}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(tmp_path / "exp.yaml"), "--nproc", "2", "--quiet"]) == 0
    summary = json.loads((tmp_path / "runs" / "default" / "summary.json").read_text())
    state = torch.load(tmp_path / "runs" / "default" / "foundation.pt")
    assert state["fc.weight"].shape == (4, 3) and summary["foundation_accuracy"] is not None


def test_the_launch_example_runs_as_documented(tmp_path):
    """launch/plugin_example/run.sh: the plug-in example of docs/data-and-models.md, 10 RGB classes."""
    import subprocess

    script = REPO / "launch" / "plugin_example" / "run.sh"
    out = subprocess.run([str(script), "--nproc", "2", "--quiet", "--set", "rounds=1", "--set", "train.local_steps=2",
                          "--set", "data.args={samples: 16, size: 16}", "--set", "model.args={width: 4}",
                          "--set", f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=600,
                         cwd=script.parent.parent.parent)
    assert out.returncode == 0, out.stderr
    theta = torch.load(tmp_path / "plugin-example" / "foundation.pt")
    assert theta["classifier.weight"].shape == (10, 16) and theta["body.0.weight"].shape[1] == 3
    assert "body.1.running_mean" in theta  # BatchNorm statistics travel and average with the weights
