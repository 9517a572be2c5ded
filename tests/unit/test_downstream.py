"""Downstream fine-tuning: foundation weights land exactly where they should, rows are fair and
deterministic, the warm-up really freezes the encoder, and bad input is a one-line error (exit 2)."""

from __future__ import annotations

import math

import pytest
import torch

from fedsim.cli import main
from fedsim.downstream import (
    DownstreamConfig,
    compare_initializations,
    downstream_table,
    finetune_segmentation,
    fit_segmenter,
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
    base = dict(train_samples=16, test_samples=8, steps=3, batch_size=4, lr=3e-3, seeds=[0],
                seg_train_samples=8, seg_batch_size=4, seg_warmup_steps=2, seg_steps=2, workers=1,
                seg_image_size=None)
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
    before = finetune_segmentation(None, TINY, tiny_ds(seg_warmup_steps=0, seg_steps=0), SIZE, 0, data=data)
    after = finetune_segmentation(None, TINY, tiny_ds(seg_warmup_steps=5, seg_steps=10), SIZE, 0, data=data)
    assert after["dice"] > (0.0 if math.isnan(before["dice"]) else before["dice"])


def test_warmup_freezes_the_encoder_then_it_moves_at_its_own_rate(foundation, data):
    """Warm-up only: the encoder is bit-identical to Θ, the decoder moved. One joint step from
    the start: Adam's first update moves a parameter by about its learning rate, so the encoder
    (seg_encoder_lr) moves 100x less than the decoder (seg_lr)."""
    x, m = data.train.images[:8], data.train.masks[:8]
    unet, _ = init_segmenter(foundation, TINY, seed=0)
    dec0 = {k: v.clone() for k, v in unet.state_dict().items() if not k.startswith("encoder.")}
    fit_segmenter(unet, x, m, tiny_ds(seg_warmup_steps=3, seg_steps=0), 0)
    for k, v in unet.encoder.state_dict().items():
        if not k.startswith(unet.encoder.head_prefixes):
            assert torch.equal(v, foundation[k]), k
    assert any(not torch.equal(v, dec0[k]) for k, v in unet.state_dict().items() if k in dec0)
    assert all(p.requires_grad for p in unet.parameters())  # handed back trainable
    # encoder lr 0: frozen throughout, whatever seg_steps says
    unet, _ = init_segmenter(foundation, TINY, seed=0)
    fit_segmenter(unet, x, m, tiny_ds(seg_warmup_steps=0, seg_steps=3, seg_encoder_lr=0.0), 0)
    assert all(torch.equal(v, foundation[k]) for k, v in unet.encoder.state_dict().items() if k in foundation
               and not k.startswith("fc."))

    unet, _ = init_segmenter(foundation, TINY, seed=0)
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    fit_segmenter(unet, x, m, tiny_ds(seg_warmup_steps=0, seg_steps=1, seg_lr=1e-2, seg_encoder_lr=1e-4), 0)
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in unet.named_parameters()}
    enc = [v for n, v in moved.items() if n.startswith("encoder.") and not n.startswith("encoder.fc.")]
    dec = [v for n, v in moved.items() if not n.startswith("encoder.")]
    assert max(enc) == pytest.approx(1e-4, rel=0.05) and max(dec) == pytest.approx(1e-2, rel=0.05)


def test_warmup_keeps_batchnorm_statistics_of_the_foundation(data):
    cfg = ModelConfig(width=8, norm="batch")
    torch.manual_seed(3)
    sd = build_model(cfg, num_classes=6).state_dict()
    sd = {k: (v + 0.5 if k.endswith("running_mean") else v) for k, v in sd.items()}
    unet, _ = init_segmenter(sd, cfg, seed=0)
    fit_segmenter(unet, data.train.images[:8], data.train.masks[:8], tiny_ds(seg_warmup_steps=3, seg_steps=0), 0)
    for k, v in unet.encoder.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            assert torch.equal(v, sd[k]), k


def test_validation_split_is_held_out_training_images():
    ds = tiny_ds(train_samples=16, test_samples=8)
    full = make_downstream_data(ds, SIZE, seed=0)
    val = make_downstream_data(ds, SIZE, seed=0, split="val")
    assert val.split == "val" and len(val.train) == 12 and len(val.test) == 4
    assert torch.equal(val.train.images, full.train.images[:12])
    assert torch.equal(val.test.images, full.train.images[12:])
    assert torch.equal(val.test.masks, full.train.masks[12:])
    with pytest.raises(ConfigError, match="quarter"):
        make_downstream_data(tiny_ds(train_samples=9, seg_train_samples=8), SIZE, 0, split="val")
    rows = compare_initializations({"random": None}, TINY, ds, SIZE, seed=0, split="val")
    assert rows[0]["split"] == "val"
    assert "VALIDATION" in downstream_table(rows).title


def test_config_validation():
    with pytest.raises(ConfigError, match="downstream.domain"):
        DownstreamConfig.from_dict({"domain": "mars"})
    with pytest.raises(ConfigError, match=r"unknown config key .downstream\."):
        DownstreamConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="tasks"):
        DownstreamConfig.from_dict({"tasks": ["detection"]})
    assert DownstreamConfig(epochs=2, train_samples=10, batch_size=4).num_steps() == 6
    for bad in ([], [0, 0], [-1], "0,1"):
        with pytest.raises(ConfigError, match="downstream.seeds"):
            DownstreamConfig.from_dict({"seeds": bad})
    with pytest.raises(ConfigError, match="seg_train_samples"):
        DownstreamConfig.from_dict({"train_samples": 8, "seg_train_samples": 16})


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


@pytest.mark.parametrize("seeds", ["a,b", ",", "1.5"])
def test_cli_bad_seeds_exit_2(capsys, seeds):
    assert main(["downstream", "--seeds", seeds]) == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and len(err.strip().splitlines()) == 1


def test_cosine_schedule_matches_a_hand_written_loop(foundation, data):
    """``seg_schedule: cosine``: the same U-Net trained by an explicit loop — decoder alone for the
    warm-up, then the encoder joins at its own rate, every group at base·½(1 + cos(π t / T)) —
    ends with the same weights; the constant schedule does not."""
    import math as _m

    from fedsim.downstream import _batches
    from fedsim.losses import segmentation_loss

    ds = tiny_ds(seg_warmup_steps=2, seg_steps=3, seg_lr=1e-2, seg_encoder_lr=1e-3, seg_schedule="cosine")
    x, m = data.train.images[:8], data.train.masks[:8]
    unet, _ = init_segmenter(foundation, TINY, seed=0)
    fit_segmenter(unet, x, m, ds, 7)

    ref, _ = init_segmenter(foundation, TINY, seed=0)
    enc = list(ref.encoder.parameters())
    dec = [p for n, p in ref.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.Adam(dec, lr=1e-2)
    total = 5
    ref.train()
    ref.encoder.eval()
    for p in enc:
        p.requires_grad_(False)
    for t, idx in enumerate(_batches(8, ds.seg_batch_size, total, torch.Generator().manual_seed(7))):
        if t == 2:
            for p in enc:
                p.requires_grad_(True)
            ref.encoder.train()
            opt.add_param_group({"params": enc, "lr": 1e-3})
        f = 0.5 * (1 + _m.cos(_m.pi * t / total))
        opt.param_groups[0]["lr"] = 1e-2 * f
        if len(opt.param_groups) > 1:
            opt.param_groups[1]["lr"] = 1e-3 * f
        loss = segmentation_loss(ref(x[idx]), m[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    a, b = unet.state_dict(), ref.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    const, _ = init_segmenter(foundation, TINY, seed=0)
    fit_segmenter(const, x, m, tiny_ds(seg_warmup_steps=2, seg_steps=3, seg_lr=1e-2, seg_encoder_lr=1e-3), 7)
    assert any(not torch.allclose(const.state_dict()[k], a[k], atol=1e-6) for k in a)
    with pytest.raises(ConfigError, match="seg_schedule"):
        DownstreamConfig.from_dict({"seg_schedule": "linear"})


def test_segmentation_images_have_their_own_size():
    """``downstream.seg_image_size`` renders the segmentation set at its own size (the same scenes,
    by seed) whatever size the caller passes; the classification set stays at the run's size;
    rows say which sizes they were fine-tuned at."""
    ds = tiny_ds(seg_image_size=48)
    own = make_downstream_data(ds, SIZE, seed=0)
    assert own.train.images.shape[-2:] == (48, 48) and own.test.masks.shape[-2:] == (48, 48)
    cls = make_downstream_data(ds, SIZE, seed=0, task="classification")
    assert cls.train.images.shape[-1] == SIZE
    assert torch.equal(own.train.labels, cls.train.labels) and torch.equal(own.train.tube, cls.train.tube)
    assert make_downstream_data(tiny_ds(seg_image_size=None), SIZE, seed=0).train.images.shape[-1] == SIZE
    rows = compare_initializations({"random": None}, TINY, ds, SIZE)
    assert rows[0]["image_sizes"] == {"segmentation": 48, "classification": SIZE}
    assert rows[0]["per_seed"][0]["dice"] == finetune_segmentation(None, TINY, ds, SIZE, 0, data=own)["dice"]
    with pytest.raises(ConfigError, match="downstream.seg_image_size"):
        DownstreamConfig.from_dict({"seg_image_size": 8})


def test_cli_does_not_import_a_plugin_named_by_a_run_folders_config(tmp_path, capsys, monkeypatch, foundation):
    # a received run folder: foundation.pt, and a config.yaml naming a module that sits beside it
    run = tmp_path / "received"
    run.mkdir()
    torch.save(foundation, run / "foundation.pt")
    marker = tmp_path / "MARKER"
    (run / "payload.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef make(**kw): pass\n")
    (run / "config.yaml").write_text("model: {name: 'received.payload:make'}\n")
    monkeypatch.chdir(tmp_path)  # where a plug-in would be imported from: received/ is importable
    assert main(["downstream", "--init", f"X={run / 'foundation.pt'}", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "received.payload:make" in err[0] and "--model-set name=" in err[0]
    assert not marker.exists()
