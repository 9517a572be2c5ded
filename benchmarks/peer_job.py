"""The FedAvg job that ``benchmarks/peer_flower.py`` runs through fedsim, Flower and a plain loop.

This file is at once

* a fedsim plug-in: ``model.name: "peer_job:make_net"`` and ``data.factory: "peer_job:load"``
  (with ``benchmarks/`` on ``PYTHONPATH``), and
* the two other runners of the same arithmetic: ``python peer_job.py plain OUT.json`` (one
  process, silos one after another) and ``python peer_job.py flower OUT.json`` (Flower's
  simulation engine on Ray, run with the Flower venv's python).

Same model (this CNN, the same seeded initialisation), data (this generator), optimiser (SGD
without momentum: no optimiser state, so a client recreated every round computes what a
persistent one does), local steps, mini-batch order (fedsim's per-silo ``BatchStream``), rounds,
uniform averaging, and the final model scored on the same test set. Nothing else is evaluated
during the run, by any of them.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

# the job (benchmarks/peer_flower.py passes the same values to fedsim's config)
JOB = {"silos": 4, "samples": 512, "size": 64, "classes": 10, "test": 512, "rounds": 5, "local_steps": 16,
       "batch_size": 32, "lr": 0.1, "seed": 0, "width": 16}


class SmallCNN(nn.Module):
    """Three stride-2 conv blocks and a linear head (~25k parameters at width 16)."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.ReLU(),
        )
        self.fc = nn.Linear(4 * w, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_net(num_classes: int, in_channels: int, width: int = 16) -> nn.Module:
    return SmallCNN(num_classes, in_channels, width)


class Patterns(Dataset):
    """RGB images of one silo: class c is a colour and a stripe orientation, plus noise; the
    images are generated on first access (a process that never reads a silo never pays for it)."""

    def __init__(self, seed: int, n: int, size: int, classes: int) -> None:
        self.seed, self.n, self.size, self.classes = seed, n, size, classes
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(classes, (n,), generator=g)
        self._images: torch.Tensor | None = None

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:  # float32 and in place: the generator's peak is one image set
            g = torch.Generator().manual_seed(self.seed + 1)
            c = self.targets.float()
            angle = (c / self.classes * torch.pi).view(-1, 1, 1)
            yy, xx = torch.meshgrid(torch.linspace(0, 1, self.size), torch.linspace(0, 1, self.size), indexing="ij")
            phase = torch.rand(self.n, 1, 1, generator=g) * 6.28
            stripes = torch.sin(12 * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
            palette = torch.rand(self.classes, 3, generator=torch.Generator().manual_seed(7))
            hue = (palette[self.targets] - 0.5).view(-1, 3, 1, 1)
            img = torch.randn(self.n, 3, self.size, self.size, generator=g).mul_(0.15)
            img.add_(stripes[:, None], alpha=0.1).add_(hue, alpha=0.8).add_(0.5).clamp_(0, 1)
            self._images = img
        return self._images

    @property
    def labels(self) -> torch.Tensor:  # the name fedsim's BatchStream reads
        return self.targets

    def image_batch(self, index) -> torch.Tensor:  # what fedsim's BatchStream reads the images with
        return self.images[index]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.images[i], int(self.targets[i])


def load(num_silos: int, seed: int, n: int = 512, size: int = 64, classes: int = 10, test: int = 512):
    """The fedsim data plug-in: one ``Patterns`` set per silo and a test set."""
    train = [Patterns(seed * 1000 + 10 * i, n, size, classes) for i in range(num_silos)]
    return train, Patterns(seed * 1000 + 999, test, size, classes)


# ---- the same job without fedsim -----------------------------------------------------------------

def initial_model() -> nn.Module:
    """As fedsim's Federation.new_model: the factory under torch.manual_seed(seed)."""
    torch.manual_seed(JOB["seed"])
    return make_net(JOB["classes"], 3, JOB["width"])


def batch_stream(silo: int, dataset: Patterns, batches_done: int):
    """Silo ``silo``'s mini-batch stream (fedsim's own, so the order is the same), advanced past
    the ``batches_done`` batches of earlier rounds (a Flower client is rebuilt every round)."""
    from fedsim.federation import BatchStream, silo_seed

    stream = BatchStream(dataset, JOB["batch_size"], silo_seed(JOB["seed"], silo), torch.device("cpu"))
    for _ in range(batches_done):  # replay the shuffles only
        if stream.pos + stream.batch_size > len(stream.order):
            stream.order = torch.randperm(len(dataset), generator=stream.generator)
            stream.pos = 0
        stream.pos += stream.batch_size
    return stream


def local_training(model: nn.Module, stream) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=JOB["lr"])  # momentum 0: stateless, as in fedsim's run
    model.train()
    for _ in range(JOB["local_steps"]):
        x, y = stream.next()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform mean, summed in float64 (as fedsim's all-reduce)."""
    return {k: (sum(s[k].double() for s in states) / len(states)).to(states[0][k].dtype) for k in states[0]}


@torch.no_grad()
def accuracy(model: nn.Module, test: Patterns) -> float:
    model.eval()
    correct = sum(int((model(test.images[s:s + 256]).argmax(1) == test.targets[s:s + 256]).sum())
                  for s in range(0, len(test), 256))
    return correct / len(test)


@functools.lru_cache(maxsize=1)
def data():
    """The job's data, generated once per process (a Flower actor reuses it across rounds)."""
    return load(JOB["silos"], JOB["seed"], JOB["samples"], JOB["size"], JOB["classes"], JOB["test"])


def run_plain() -> dict:
    torch.set_num_threads(1)
    train, test = data()
    for ds in [*train, test]:  # generated before the clock starts, as fedsim's ranks do
        ds.images  # noqa: B018
    global_state = initial_model().state_dict()
    model = make_net(JOB["classes"], 3, JOB["width"])
    importlib.import_module("torch._dynamo")  # torch.optim's first step imports it; fedsim does before its clock
    started = time.perf_counter()
    for k in range(JOB["rounds"]):
        states = []
        for i in range(JOB["silos"]):
            model.load_state_dict(global_state)
            local_training(model, batch_stream(i, train[i], k * JOB["local_steps"]))
            states.append({n: t.detach().clone() for n, t in model.state_dict().items()})
        global_state = average(states)
    model.load_state_dict(global_state)
    acc = accuracy(model, test)
    return {"accuracy": acc, "per_round_s": (time.perf_counter() - started) / JOB["rounds"], "state": global_state}


def flower_train(msg, context):
    """Flower's ClientApp train handler: silo ``partition-id`` trains the global model of round
    ``server-round`` (module level, so that Ray ships it by reference)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    torch.set_num_threads(1)
    silo = int(context.node_config["partition-id"])
    k = int(msg.content["config"]["server-round"]) - 1
    dataset = data()[0][silo]
    model = make_net(JOB["classes"], 3, JOB["width"])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    local_training(model, batch_stream(silo, dataset, k * JOB["local_steps"]))
    reply = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                        "metrics": MetricRecord({"num-examples": len(dataset)})})
    return Message(content=reply, reply_to=msg)


_FLOWER_OUT: dict = {}


def flower_server(grid, context) -> None:
    """Flower's ServerApp: its stock FedAvg over every node for JOB rounds, then the final model
    scored on the test set."""
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    torch.set_num_threads(1)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=JOB["silos"],
                      min_available_nodes=JOB["silos"])
    started = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_model().state_dict()),
                            num_rounds=JOB["rounds"])
    model = make_net(JOB["classes"], 3, JOB["width"])
    model.load_state_dict(result.arrays.to_torch_state_dict())
    _FLOWER_OUT["accuracy"] = accuracy(model, data()[1])
    _FLOWER_OUT["per_round_s"] = (time.perf_counter() - started) / JOB["rounds"]
    _FLOWER_OUT["state"] = {k: v.clone() for k, v in model.state_dict().items()}


def run_flower() -> dict:
    """The job through Flower's simulation engine (Ray backend), one CPU per client actor."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    client = ClientApp()
    client.train()(flower_train)
    server = ServerApp()
    server.main()(flower_server)
    run_simulation(server_app=server, client_app=client, num_supernodes=JOB["silos"],
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    return dict(_FLOWER_OUT)


if __name__ == "__main__":
    import peer_job  # the module itself, not __main__: Ray pickles its functions by reference

    which, dest = sys.argv[1], Path(sys.argv[2])
    result = peer_job.run_plain() if which == "plain" else peer_job.run_flower()
    state = result.pop("state", None)
    if state is not None:
        torch.save(state, dest.with_suffix(".pt"))
    dest.write_text(json.dumps(result))
