"""Downstream fine-tuning: foundation weights land exactly where they should, rows are fair and
deterministic, and bad foundation files are one-line errors (exit 2)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fedsim.cli import main
from fedsim.downstream import (
    DownstreamConfig,
    compare_initializations,
    downstream_table,
    finetune_segmentation,
    init_classifier,
    init_segmenter,
    load_foundation_file,
    make_downstream_data,
)
from fedsim.errors import ConfigError
from fedsim.models import ModelConfig, build_model

TINY = ModelConfig(width=8)
SIZE = 32


def tiny_ds(**kw) -> DownstreamConfig:
    base = dict(train_samples=16, test_samples=8, steps=3, batch_size=4, lr=3e-3)
    base.update(kw)
    return DownstreamConfig(**base)


@pytest.fixture(scope="module")
def foundation() -> dict:
    """A foundation state dict (6-class build_model) where every tensor differs from any fresh
    init (norm weights/biases too: noise is added to all of them)."""
    torch.manual_seed(1234)
    sd = build_model(TINY, num_classes=6).state_dict()
    return {k: v + 0.1 * torch.randn(v.shape) if v.is_floating_point() else v.clone() for k, v in sd.items()}


@pytest.fixture(scope="module")
def data():
    return make_downstream_data(tiny_ds(), SIZE, seed=0)


def test_segmenter_encoder_gets_every_backbone_tensor_exactly(foundation):
    random_unet, n0 = init_segmenter(None, TINY, seed=0)
    unet, n = init_segmenter(foundation, TINY, seed=0)
    assert n0 == 0
    enc = unet.encoder.state_dict()
    backbone = [k for k in enc if not k.startswith(unet.encoder.head_prefixes)]
    assert n == len(backbone) > 0
    for k in backbone:
        assert torch.equal(enc[k], foundation[k]), k
        assert not torch.equal(random_unet.encoder.state_dict()[k], foundation[k]), k
    # the decoder is the same for every initialization (fair comparison)
    for k, v in unet.state_dict().items():
        if not k.startswith("encoder."):
            assert torch.equal(v, random_unet.state_dict()[k]), k


def test_classifier_copies_backbone_but_not_head(foundation):
    fresh, _ = init_classifier(None, TINY, seed=0)
    model, n = init_classifier(foundation, TINY, seed=0)
    sd, fresh_sd = model.state_dict(), fresh.state_dict()
    heads = model.head_prefixes
    backbone = [k for k in sd if not k.startswith(heads)]
    head = [k for k in sd if k.startswith(heads)]
    assert n == len(backbone) and head
    for k in backbone:
        assert torch.equal(sd[k], foundation[k]), k
    for k in head:  # 3-class head: fresh (same as the random-init row), not the 6-class foundation head
        assert sd[k].shape[0] == 3
        assert torch.equal(sd[k], fresh_sd[k]), k
    assert model.fc.weight.shape != foundation["fc.weight"].shape


def test_state_dict_that_does_not_fit_names_the_source(foundation):
    with pytest.raises(ConfigError, match="my.pt.*does not fit"):
        init_segmenter(foundation, ModelConfig(width=16), source="my.pt")
    with pytest.raises(ConfigError, match="my.pt.*does not fit"):
        init_classifier(foundation, ModelConfig(width=16), source="my.pt")


def test_compare_is_deterministic_and_fair(foundation):
    inits = {"random": None, "fm": foundation}
    ds = tiny_ds()
    a = compare_initializations(inits, TINY, ds, SIZE, seed=0)
    b = compare_initializations(inits, TINY, ds, SIZE, seed=0)
    keys = ["dice", "dice_catheter", "dice_guidewire", "miou", "jaccard", "accuracy", "seg_loss", "cls_loss"]
    for ra, rb in zip(a, b):
        for k in keys:
            assert (math.isnan(ra[k]) and math.isnan(rb[k])) or ra[k] == rb[k], k
    assert [r["init"] for r in a] == ["random", "fm"]
    assert a[0]["encoder_tensors_loaded"] == 0 and a[1]["encoder_tensors_loaded"] > 0
    assert a[1]["backbone_tensors_loaded"] == a[1]["encoder_tensors_loaded"]
    # the init is the only difference between rows, and it does change the outcome
    assert a[0]["seg_loss"] != a[1]["seg_loss"]
    for r in a:
        assert 0.0 <= r["accuracy"] <= 1.0
        for k in ("dice", "miou", "jaccard"):
            assert math.isnan(r[k]) or 0.0 <= r[k] <= 1.0
    table = downstream_table(a)
    assert table.row_count == 2


def test_segmentation_scores_follow_fedsim_metrics(monkeypatch, data):
    """The reported numbers are fedsim.metrics on the argmax prediction: forcing a perfect
    prediction gives Dice = mIoU = Jaccard = 1 for catheter and guidewire."""
    import fedsim.downstream as D

    monkeypatch.setattr(D, "_predict", lambda model, images, batch_size=64: data.test.masks.clone())
    r = finetune_segmentation(None, TINY, tiny_ds(steps=1), SIZE, 0, data=data)
    assert r["dice"] == r["miou"] == r["jaccard"] == 1.0
    assert r["dice_catheter"] == r["dice_guidewire"] == 1.0


def test_training_improves_over_no_training(data):
    """Reliable learning signal: 15 steps beat the untrained network on Dice."""
    before = finetune_segmentation(None, TINY, tiny_ds(steps=0, lr=5e-3), SIZE, 0, data=data)
    after = finetune_segmentation(None, TINY, tiny_ds(steps=15, lr=5e-3), SIZE, 0, data=data)
    assert after["dice"] > (0.0 if math.isnan(before["dice"]) else before["dice"])


def test_config_validation():
    with pytest.raises(ConfigError, match="downstream.domain"):
        DownstreamConfig.from_dict({"domain": "mars"})
    with pytest.raises(ConfigError, match=r"unknown config key .downstream\."):
        DownstreamConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="tasks"):
        DownstreamConfig.from_dict({"tasks": ["detection"]})
    assert DownstreamConfig(epochs=2, train_samples=10, batch_size=4).num_steps() == 6


def test_load_foundation_file_errors(tmp_path, foundation):
    with pytest.raises(ConfigError, match="nope.pt: foundation file not found"):
        load_foundation_file(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt"):
        load_foundation_file(junk)
    good = tmp_path / "foundation.pt"
    torch.save(foundation, good)
    loaded = load_foundation_file(good)
    assert all(torch.equal(loaded[k], foundation[k]) for k in foundation)


def test_cli_bad_foundation_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "missing" / "foundation.pt"
    assert main(["downstream", "--init", f"X={missing}"]) == 2
    err = capsys.readouterr().err
    assert "foundation file not found" in err and str(missing) in err and len(err.strip().splitlines()) == 1


def test_cli_state_dict_of_another_model_exits_2(tmp_path, capsys, foundation):
    path = tmp_path / "foundation.pt"
    torch.save(foundation, path)  # width 8; the CLI default model is width 16
    assert main(["downstream", "--init", f"X={path}", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--model-set" in err


def test_cli_runs_and_writes_json(tmp_path, capsys, foundation):
    path = tmp_path / "run" / "foundation.pt"
    path.parent.mkdir()
    torch.save(foundation, path)
    out = tmp_path / "rows.json"
    rc = main(["downstream", "--random", "--init", str(path), "--model-set", "width=8", "--steps", "2",
               "--train-samples", "8", "--test-samples", "4", "--batch-size", "4", "--image-size", str(SIZE),
               "--domain", "phantom", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [r["init"] for r in rows] == ["random", "run"]
    assert rows[1]["encoder_tensors_loaded"] > 0 and rows[0]["domain"] == "phantom"
    assert "Dice" in capsys.readouterr().out
