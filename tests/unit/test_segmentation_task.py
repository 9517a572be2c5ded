"""``task: segmentation``: classification batches are unchanged, and bad settings are one-line
ConfigErrors."""

from __future__ import annotations

import pytest
import torch

from fedsim.cli import main
from fedsim.config import load_config
from fedsim.data.rank import BatchStream, silo_seed
from fedsim.errors import ConfigError
from fedsim.plan import scenario_for
from tests.harness import TINY, sequential_setup


def test_classification_batches_unchanged():
    cfg, topo, models, opts, streams = sequential_setup(["name=c"])
    x, y = streams[0].next()
    assert y.dtype == torch.long and y.shape == (cfg.train.batch_size,)
    seg = BatchStream(streams[1].dataset, cfg.train.batch_size, silo_seed(cfg.seed, 1), torch.device("cpu"), "masks")
    x2, m = seg.next()
    assert m.shape == (cfg.train.batch_size, *x2.shape[-2:])


@pytest.mark.parametrize("overrides, message", [
    (["task=segmentation", "algorithm=fedprox"], "algorithm 'fedprox' does not support task 'segmentation'"),
    (["task=segmentation", "algorithm=fedefm"], "algorithm 'fedefm' does not support task 'segmentation'"),
    (["task=detection"], "config key 'task' expects one of 'classification', 'segmentation', got 'detection'"),
    (["init=imagenet", "task=segmentation"], "config key 'init' expects one of 'random', 'pretrained', 'fm', got 'imagenet'"),
    (["init=fm"], "init: fm trains a U-Net on the proxy set and needs task: segmentation"),
    (["init_from=/nonexistent/theta.pt"], "init_from: /nonexistent/theta.pt: file not found"),
    (["task=segmentation", "fminit.alpha=1.5"], "config key 'fminit.alpha' expects float >= 0 and <= 1, got 1.5"),
])
def test_bad_settings_are_one_line_config_errors(overrides, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cfg = load_config(None, TINY + overrides)
        scenario_for(cfg)
    code = main(["run", "--quiet", *[f"--set={s}" for s in TINY + overrides + [f"output_dir={tmp_path}"]]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fedsim: error:") and message in err[0]
    assert not any(tmp_path.iterdir())  # refused before anything ran
