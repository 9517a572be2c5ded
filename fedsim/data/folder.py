"""Real data from folders: ``root/<silo>/{images,masks}/*.png`` plus ``root/<silo>/labels.csv``.

* ``images/NAME.png`` — grayscale (8- or 16-bit; RGB is converted to luminance), any size; resized
  to ``image_size`` with bilinear interpolation and scaled to [0, 1].
* ``masks/NAME.png`` — same file name, pixel values 0 background / 1 catheter / 2 guidewire;
  resized with nearest neighbour.
* ``labels.csv`` — header row, one row per image: ``file`` (the image file name, required),
  ``label`` (foundation class: 0..5 or a name from CLASS_NAMES, required), ``tube`` (0..2 or
  normal/borderline/abnormal, default 0), ``domain`` (0..3 or human/animal/phantom/simulation,
  default human), ``attribute`` (a float in [0, 1], default 0).
* Silos are the sub-folders in sorted name order; a sub-folder named ``test`` (optional) is the
  global test set and one named ``public`` (optional) the shared public/proxy set.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.errors import DataError

from .dataset import CLASS_NAMES, DOMAINS, TUBE_NAMES, SiloDataset

TEST_DIR = "test"
PUBLIC_DIR = "public"


def _parse(value: str, names: tuple[str, ...], what: str, path: Path, row: int) -> int:
    v = value.strip()
    if v in names:
        return names.index(v)
    try:
        i = int(v)
    except ValueError:
        i = -1
    if not 0 <= i < len(names):
        raise DataError(f"{path}, row {row}: {what} {value!r} is not one of 0..{len(names) - 1} "
                        f"or {', '.join(names)}")
    return i


def _read_png(path: Path, kind: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if kind == "image":
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(im, dtype=np.float32)
                    arr = arr / (65535.0 if arr.max() > 255 else 255.0)
                else:
                    arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            else:
                arr = np.asarray(im if im.mode in ("L", "P", "I", "I;16") else im.convert("L")).astype(np.int64)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"cannot read {kind} {path}: {e}") from None
    return arr


def load_silo_folder(path: str | Path, image_size: int) -> SiloDataset:
    """Load one silo folder into a :class:`SiloDataset` (errors name the offending path)."""
    path = Path(path)
    img_dir, mask_dir, csv_path = path / "images", path / "masks", path / "labels.csv"
    for p, what in ((path, "silo folder"), (img_dir, "images folder"), (mask_dir, "masks folder")):
        if not p.is_dir():
            raise DataError(f"missing {what}: {p} (expected root/<silo>/images, root/<silo>/masks, "
                            "root/<silo>/labels.csv)")
    if not csv_path.is_file():
        raise DataError(f"missing labels file: {csv_path} (columns: file,label[,tube,domain,attribute])")
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {csv_path}: {e}") from None
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise DataError(f"{csv_path}: needs a header with at least the columns file,label and one row per image")
    by_file = {}
    for r, row in enumerate(rows, start=2):
        name = (row.get("file") or "").strip()
        if not name:
            raise DataError(f"{csv_path}, row {r}: empty file name")
        by_file[name] = (r, row)
    images = sorted(p.name for p in img_dir.iterdir() if p.suffix.lower() == ".png")
    if not images:
        raise DataError(f"no .png images in {img_dir}")
    imgs, msks, labels, tubes, doms, attrs = [], [], [], [], [], []
    for name in images:
        ip, mp = img_dir / name, mask_dir / name
        if not mp.is_file():
            raise DataError(f"image {ip} has no mask: expected {mp}")
        if name not in by_file:
            raise DataError(f"image {ip} has no row in {csv_path}")
        r, row = by_file[name]
        labels.append(_parse(row["label"], CLASS_NAMES, "label", csv_path, r))
        tubes.append(_parse(row.get("tube") or "0", TUBE_NAMES, "tube", csv_path, r))
        doms.append(_parse(row.get("domain") or "human", DOMAINS, "domain", csv_path, r))
        try:
            a = float(row.get("attribute") or 0.0)
        except ValueError:
            raise DataError(f"{csv_path}, row {r}: attribute {row.get('attribute')!r} is not a number") from None
        attrs.append(a)
        im = _read_png(ip, "image")
        mk = _read_png(mp, "mask")
        if im.ndim != 2 or mk.shape != im.shape:
            raise DataError(f"mask {mp} has shape {mk.shape} but image {ip} has {im.shape}")
        if mk.min() < 0 or mk.max() > 2:
            raise DataError(f"mask {mp} has values {sorted(np.unique(mk).tolist())[:8]}; "
                            "allowed: 0 background, 1 catheter, 2 guidewire")
        t_im = torch.from_numpy(np.ascontiguousarray(im))[None, None]
        t_mk = torch.from_numpy(np.ascontiguousarray(mk))[None, None].float()
        if t_im.shape[-2:] != (image_size, image_size):
            t_im = F.interpolate(t_im, size=(image_size, image_size), mode="bilinear", align_corners=False)
            t_mk = F.interpolate(t_mk, size=(image_size, image_size), mode="nearest")
        imgs.append(t_im[0])
        msks.append(t_mk[0, 0].long())
    return SiloDataset(
        torch.stack(imgs).clamp(0, 1).float(), torch.stack(msks), torch.tensor(labels), torch.tensor(tubes),
        torch.tensor(doms), torch.tensor(attrs, dtype=torch.float32), None, path.name,
        [str(img_dir / n) for n in images],
    )


def load_folder(root: str | Path, image_size: int) -> tuple[list[SiloDataset], SiloDataset | None]:
    """All silo folders under ``root`` (sorted by name) and the optional ``root/test`` set."""
    if root is None:
        raise DataError("data.kind is 'folder' but data.root is not set")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    silos = [load_silo_folder(p, image_size) for p in subdirs if p.name not in (TEST_DIR, PUBLIC_DIR)]
    if not silos:
        raise DataError(f"no silo folders in {root} (expected {root}/<silo>/images, masks, labels.csv)")
    test_dir = root / TEST_DIR
    test = load_silo_folder(test_dir, image_size) if test_dir.is_dir() else None
    return silos, test


def save_folder(root: str | Path, silos: list[SiloDataset], test: SiloDataset | None = None) -> Path:
    """Write datasets in the folder layout (8-bit PNGs), e.g. to export synthetic data."""
    from PIL import Image

    root = Path(root)
    parts = [(f"silo{i:02d}", ds) for i, ds in enumerate(silos)]
    if test is not None:
        parts.append((TEST_DIR, test))
    for name, ds in parts:
        (root / name / "images").mkdir(parents=True, exist_ok=True)
        (root / name / "masks").mkdir(parents=True, exist_ok=True)
        with open(root / name / "labels.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "label", "tube", "domain", "attribute"])
            for k in range(len(ds)):
                fname = f"{k:05d}.png"
                img = (ds.images[k, 0].clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
                Image.fromarray(img).save(root / name / "images" / fname)
                Image.fromarray(ds.masks[k].to(torch.uint8).numpy()).save(root / name / "masks" / fname)
                w.writerow([fname, int(ds.labels[k]), int(ds.tube[k]), DOMAINS[int(ds.domain[k])],
                            f"{float(ds.attribute[k]):.6f}"])
    return root
