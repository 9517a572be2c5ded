"""Folder layout root/<silo>/{images,masks}/*.png + labels.csv: round trip and clear errors.

The checks that need no process: tests/unit/data/test_folder.py."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.harness import write_rgb_classes


def test_rgb_ten_classes_train_fedavg_and_score_over_ten_classes(tmp_path):
    """FedAvg, 2 rounds, 2 ranks on the RGB folder data, against a re-computation that reads the
    PNGs itself; Θ's accuracy is an argmax over 10 logits."""
    import json

    from fedsim.config import load_config
    from fedsim.data import SiloDataset
    from fedsim.federation import BatchStream, make_optimizer, silo_seed, train_steps
    from fedsim.launch import spawn
    from fedsim.models import build_model
    from fedsim.plan import build_plan, scenario_for
    from fedsim.trainer import run_rank

    root = write_rgb_classes(tmp_path / "rgb")
    cfg = load_config(None, ["algorithm=fedavg", "topology=complete:2", "rounds=2", "train.local_steps=3",
                             "train.batch_size=8", "train.lr=0.01", "model.width=4", "data.kind=folder",
                             f"data.root={root}", "data.image_size=16", f"output_dir={tmp_path}", "name=rgb"])
    cfg.scenario = scenario_for(cfg)
    (tmp_path / "rgb-run").mkdir()
    summary = spawn(run_rank, 2, build_plan(cfg, tmp_path / "rgb-run", 2))[0]

    def read(folder):
        rows = [line.split(",") for line in (folder / "labels.csv").read_text().split()[1:]]
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(folder / "images" / f).convert("RGB"),
                                                     dtype=np.float32) / 255).permute(2, 0, 1) for f, _ in rows])
        return SiloDataset.from_tensors(x, torch.tensor([int(c) for _, c in rows]))

    silos, test = [read(root / "site0"), read(root / "site1")], read(root / "test")
    models, opts, streams = [], [], []
    for i, ds in enumerate(silos):
        torch.manual_seed(cfg.seed)
        models.append(build_model(cfg.model, num_classes=10, in_channels=3))
        opts.append(make_optimizer(models[i], cfg))
        streams.append(BatchStream(ds, cfg.train.batch_size, silo_seed(cfg.seed, i), torch.device("cpu")))
    for _ in range(cfg.rounds):
        for m, o, s in zip(models, opts, streams):
            train_steps(m, o, s, cfg.train.local_steps)
        mean = {k: (models[0].state_dict()[k] + models[1].state_dict()[k]) / 2 for k in models[0].state_dict()}
        for m in models:
            m.load_state_dict(mean)
    theta = torch.load(tmp_path / "rgb-run" / "foundation.pt")
    for k, v in models[0].state_dict().items():
        torch.testing.assert_close(theta[k], v, atol=1e-6, rtol=0)
    assert theta["fc.weight"].shape[0] == 10 and theta["stem.0.weight"].shape[1] == 3
    with torch.no_grad():
        logits = models[0](test.images)
    assert logits.shape == (20, 10)
    expected = int((logits.argmax(1) == test.labels).sum()) / 20
    assert summary["foundation_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert json.loads((tmp_path / "rgb-run" / "summary.json").read_text())["foundation_accuracy"] == expected


def test_segmentation_without_masks_is_one_line(tmp_path, capsys):
    from fedsim.cli import main

    root = write_rgb_classes(tmp_path / "rgb")
    code = main(["run", "--nproc", "2", "--quiet", "--set", "task=segmentation", "--set", "algorithm=fedavg",
                 "--set", "topology=complete:2", "--set", "data.kind=folder", "--set", f"data.root={root}",
                 "--set", "downstream.enabled=false", "--set", "compare_with=[]", "--set", "data.domains=null",
                 "--set", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"missing masks folder: {root / 'site0' / 'masks'}" in err and "segmentation" in err
