"""SCAFFOLD (Karimireddy et al., ICML 2020, option II): its correction changes plain local SGD, and
what it is not defined for is refused in one line."""

from __future__ import annotations

import pytest

from tests.harness import TINY, load_all, mean_of, scaffold_reference, sequential_setup

SGD = ["algorithm=scaffold", "train.optimizer=sgd", "train.momentum=0", "train.lr=0.01", "scaffold.server_lr=0.8",
       "rounds=3"]


def test_scaffold_differs_from_plain_local_sgd(tmp_path):
    """With c = c_i = 0 a round is FedAvg's with step η_g; SCAFFOLD's second round already
    corrects: the reference without the correction ends elsewhere."""
    models, c_i = scaffold_reference(SGD)
    cfg, topo, plain, opts, streams = sequential_setup(SGD)
    from fedsim.federation import train_steps

    x = [t.detach().clone() for t in plain[0].state_dict().values()]
    for _ in range(cfg.rounds):
        for i in range(4):
            train_steps(plain[i], opts[i], streams[i], cfg.train.local_steps)
        mean = mean_of([list(m.state_dict().values()) for m in plain])
        x = [xx + cfg.scaffold.server_lr * (m - xx) for xx, m in zip(x, mean)]
        load_all(plain, x)
    moved = max(float((a - b).abs().max()) for a, b in zip(models[0].state_dict().values(), x))
    assert moved > 1e-4


@pytest.mark.parametrize("extra,match", [
    (["train.optimizer=adam"], "set train.optimizer: sgd and train.momentum: 0"),
    (["train.optimizer=sgd"], "set train.optimizer: sgd and train.momentum: 0"),  # momentum 0.9
    (["train.optimizer=sgd", "train.momentum=0", "train.lr_schedule=sqrt"], "train.lr_schedule: constant"),
    (["train.optimizer=sgd", "train.momentum=0", "compression.kind=int8"], "use compression.kind: none"),
    (["train.optimizer=sgd", "train.momentum=0", "privacy.mode=client", "privacy.noise_multiplier=1",
      "privacy.delta=0.1"], "privacy.mode client is not available for algorithm 'scaffold'"),
])
def test_what_scaffold_is_not_defined_for_is_one_line(extra, match):
    from fedsim.errors import ConfigError
    from fedsim.experiment import resolve_config

    with pytest.raises(ConfigError, match=match) as err:
        resolve_config(None, TINY + ["algorithm=scaffold", "compare_with=[]", "downstream.enabled=false", *extra])
    assert "\n" not in str(err.value)
