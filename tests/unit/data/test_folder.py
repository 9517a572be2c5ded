"""Folder layout root/<silo>/{images,masks}/*.png + labels.csv: round trip and clear errors."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fedsim.data import CLASS_NAMES, DataConfig, generate, load_federated
from fedsim.data.folder import load_folder, save_folder
from fedsim.errors import DataError
from tests.harness import write_rgb_classes


@pytest.fixture()
def root(tmp_path):
    silos = [generate(6, domains=["human", "phantom"], image_size=32, seed=s, name=f"s{s}") for s in (1, 2)]
    test = generate(4, image_size=32, seed=3)
    save_folder(tmp_path / "data", silos, test)
    return tmp_path / "data", silos, test


def test_round_trip(root):
    path, silos, test = root
    loaded, loaded_test, names = load_folder(path, 32)
    assert names == CLASS_NAMES  # save_folder writes classes.txt
    assert len(loaded) == 2 and loaded_test is not None and len(loaded_test) == 4
    for a, b in zip(loaded, silos):
        assert (a.images - b.images).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit quantisation only
        for key in ("masks", "labels", "tube", "domain"):
            assert torch.equal(getattr(a, key), getattr(b, key)), key
        assert (a.attribute - b.attribute).abs().max() < 1e-5
    fd = load_federated(DataConfig(kind="folder", root=str(path), image_size=32), 2, seed=0)
    assert [len(d) for d in fd.train] == [6, 6] and len(fd.test) == 4


def test_resize_hold_out_and_resplit(root):
    path, _, _ = root
    shutil.rmtree(path / "test")
    fd = load_federated(DataConfig(kind="folder", root=str(path), image_size=48, test_fraction=0.5), 2, seed=0)
    assert fd.train[0].images.shape[-1] == 48 and len(fd.test) == 6
    assert set(fd.train[0].masks.unique().tolist()) <= {0, 1, 2}
    fd3 = load_federated(DataConfig(kind="folder", root=str(path), image_size=32, partition="iid",
                                    test_fraction=0.5), 3, seed=0)
    assert [len(d) for d in fd3.train] == [2, 2, 2]
    with pytest.raises(DataError, match="2 silo folders but the run has 3"):
        load_federated(DataConfig(kind="folder", root=str(path), image_size=32), 3, seed=0)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        load_federated(DataConfig(kind="folder", root=str(tmp_path / "nope")), 2, 0)
    with pytest.raises(DataError, match="data.root"):
        load_federated(DataConfig(kind="folder"), 2, 0)


def test_missing_masks_folder(root):
    path, _, _ = root
    shutil.rmtree(path / "silo01" / "masks")
    with pytest.raises(DataError, match=str(path / "silo01" / "masks")):
        load_folder(path, 32, masks=True)  # segmentation
    silos, _, _ = load_folder(path, 32)  # classification: masks are optional, used only if every silo has them
    assert all(ds.masks is None for ds in silos)


def test_image_without_mask(root):
    path, _, _ = root
    (path / "silo00" / "masks" / "00003.png").unlink()
    with pytest.raises(DataError, match="00003.png has no mask"):
        load_folder(path, 32)


def test_unreadable_image(root):
    path, _, _ = root
    (path / "silo00" / "images" / "00002.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*silo00/images/00002.png"):
        load_folder(path, 32)


def test_label_outside_class_list(root):
    path, _, _ = root
    csv = path / "silo01" / "labels.csv"
    lines = csv.read_text().splitlines()
    lines[2] = "00001.png,7,0,human,0.5"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels.csv, row 3: label '7'"):
        load_folder(path, 32)


def test_bad_mask_values_and_missing_csv(root):
    path, _, _ = root
    Image.new("L", (32, 32), 200).save(path / "silo00" / "masks" / "00000.png")
    with pytest.raises(DataError, match=r"mask .*00000.png has values"):
        load_folder(path, 32)
    (path / "silo01" / "labels.csv").unlink()
    with pytest.raises(DataError, match=r"silo01/labels.csv"):
        load_silo = __import__("fedsim.data.folder", fromlist=["load_silo_folder"]).load_silo_folder
        load_silo(path / "silo01", 32)


def test_named_labels_accepted(root):
    path, silos, _ = root
    csv = path / "silo00" / "labels.csv"
    lines = csv.read_text().splitlines()
    lines[1] = "00000.png,bifurcation,abnormal,simulation,0.1"
    csv.write_text("\n".join(lines) + "\n")
    loaded, _, _ = load_folder(path, 32)
    assert int(loaded[0].labels[0]) == 3 and int(loaded[0].tube[0]) == 2 and int(loaded[0].domain[0]) == 3


def test_rgb_ten_classes_without_masks(tmp_path):
    root = write_rgb_classes(tmp_path / "rgb")
    fd = load_federated(DataConfig(kind="folder", root=str(root), image_size=16), 2, seed=0)
    assert fd.num_classes == 10 and fd.in_channels == 3 and fd.train[0].masks is None
    assert fd.class_names == tuple(str(i) for i in range(10))
    img = np.asarray(Image.open(root / "site1" / "images" / "013.png").convert("RGB"), dtype=np.float32) / 255
    torch.testing.assert_close(fd.train[1].images[13], torch.from_numpy(img).permute(2, 0, 1), atol=0, rtol=0)
    gray = load_federated(DataConfig(kind="folder", root=str(root), image_size=16, channels=1), 2, seed=0)
    assert gray.in_channels == 1
    named = load_federated(DataConfig(kind="folder", root=str(root), image_size=16,
                                      classes=[f"class-{i}" for i in range(12)]), 2, seed=0)
    assert named.num_classes == 12  # a config list may name classes no image has yet
    with pytest.raises(DataError, match=r"task: segmentation needs|missing masks folder: .*site0/masks"):
        load_federated(DataConfig(kind="folder", root=str(root), image_size=16), 2, seed=0, masks=True)
