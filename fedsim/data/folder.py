"""Real data from folders: ``root/<silo>/images/*`` plus ``root/<silo>/labels.csv`` (and, for
segmentation, ``root/<silo>/masks/*.png``).

* ``images/NAME`` — PNG, JPEG, BMP or TIFF; grayscale (8- or 16-bit) or colour, any size; resized
  to ``image_size`` with bilinear interpolation and scaled to [0, 1]. ``channels`` 1 converts to
  luminance, 3 to RGB (grayscale repeated); None keeps the data's own: RGB as soon as one image of
  the dataset is in colour, else grayscale.
* ``masks/NAME`` (or ``masks/STEM.png``) — optional: needed by ``task: segmentation`` only;
  pixel values 0 background / 1 catheter / 2 guidewire; resized with nearest neighbour.
* ``labels.csv`` — header row, one row per image: ``file`` (the image file name, required),
  ``label`` (a class index 0..C-1 or a class name, required), ``tube`` (0..2 or
  normal/borderline/abnormal, default 0), ``domain`` (0..3 or human/animal/phantom/simulation,
  default human), ``attribute`` (a float in [0, 1], default 0).
* Classes: ``classes`` (the config's ``data.classes``), else ``root/classes.txt`` (one name per
  line, line i = class i), else read from the labels: C = largest index + 1 when they are all
  integers, else the sorted distinct names.
* Silos are the sub-folders in sorted name order; a sub-folder named ``test`` (optional) is the
  global test set and one named ``public`` (optional) the shared public/proxy set.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from fedsim.config.data import CLASS_NAMES, DOMAINS, TUBE_NAMES
from fedsim.errors import DataError

from .dataset import SiloDataset

TEST_DIR = "test"
PUBLIC_DIR = "public"
CLASSES_FILE = "classes.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_GRAY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


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


def _read_image(path: Path, kind: str, channels: int = 1) -> np.ndarray:
    """An image as float32 (H, W) / (H, W, 3) in [0, 1] (``kind`` "image"), or a mask as int64
    (H, W)."""
    try:
        with Image.open(path) as im:
            im.load()
            if kind == "image":
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    arr = np.asarray(im, dtype=np.float32)
                    arr = arr / (65535.0 if arr.max() > 255 else 255.0)
                    if channels == 3:
                        arr = np.repeat(arr[..., None], 3, axis=2)
                else:
                    arr = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.float32) / 255.0
            else:
                arr = np.asarray(im if im.mode in ("L", "P", "I", "I;16") else im.convert("L")).astype(np.int64)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"cannot read {kind} {path}: {e}") from None
    return arr


def _image_files(img_dir: Path) -> list[str]:
    return sorted(p.name for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def detect_channels(folders: list[Path]) -> int:
    """3 when any image under ``folders`` is in colour, else 1 (reads only the file headers)."""
    for folder in folders:
        img_dir = folder / "images"
        if not img_dir.is_dir():
            continue
        for name in _image_files(img_dir):
            try:
                with Image.open(img_dir / name) as im:
                    if im.mode not in _GRAY_MODES:
                        return 3
            except (OSError, UnidentifiedImageError, ValueError) as e:
                raise DataError(f"cannot read image {img_dir / name}: {e}") from None
    return 1


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    if not csv_path.is_file():
        raise DataError(f"missing labels file: {csv_path} (columns: file,label[,tube,domain,attribute])")
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {csv_path}: {e}") from None
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise DataError(f"{csv_path}: needs a header with at least the columns file,label and one row per image")
    return rows


def resolve_classes(root: Path, folders: list[Path], classes: list | None = None) -> tuple[str, ...]:
    """The class names of a folder dataset: ``classes`` (the config's), else ``root/classes.txt``,
    else read from every ``labels.csv`` (integers: 0..max; names: sorted)."""
    if classes:
        return tuple(str(c) for c in classes)
    listed = root / CLASSES_FILE
    if listed.is_file():
        names = tuple(line.strip() for line in listed.read_text().splitlines() if line.strip())
        if len(names) < 2 or len(set(names)) != len(names):
            raise DataError(f"{listed}: needs at least two distinct class names, one per line")
        return names
    ints, names, first_name = [], set(), None
    for folder in folders:
        csv_path = folder / "labels.csv"
        for r, row in enumerate(read_rows(csv_path), start=2):
            v = (row.get("label") or "").strip()
            try:
                ints.append(int(v))
            except ValueError:
                names.add(v)
                first_name = first_name or (csv_path, r, v)
    if ints and names:
        path, r, v = first_name
        raise DataError(f"{path}, row {r}: label {v!r} is a name but other labels are integers; use one "
                        f"kind, or list the class names in {listed}")
    if names:
        return tuple(sorted(names))
    if min(ints) < 0:
        raise DataError(f"negative class label {min(ints)} in {root}; labels are 0..C-1 or class names")
    return tuple(str(i) for i in range(max(max(ints) + 1, 2)))


def index_rows(path: str | Path) -> tuple[dict[str, tuple[int, dict[str, str]]], list[str]]:
    """({file name: (its row number in labels.csv, the row)}, the image files) of one silo folder,
    checked both ways without reading an image: every row names an image that is there (a row whose
    image is missing is an error, never silently dropped) and every image has a row."""
    path = Path(path)
    img_dir, csv_path = path / "images", path / "labels.csv"
    if not img_dir.is_dir():
        raise DataError(f"missing images folder: {img_dir} (expected root/<silo>/images and root/<silo>/labels.csv)")
    by_file = {}
    for r, row in enumerate(read_rows(csv_path), start=2):
        name = (row.get("file") or "").strip()
        if not name:
            raise DataError(f"{csv_path}, row {r}: empty file name")
        if name in by_file:
            raise DataError(f"{csv_path}, row {r}: {name} is listed twice (rows {by_file[name][0]} and {r})")
        by_file[name] = (r, row)
    images = _image_files(img_dir)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
    present = set(images)
    for name, (r, _) in by_file.items():
        if name not in present:
            raise DataError(f"{csv_path}, row {r}: image {img_dir / name} does not exist; add the image or "
                            "remove the row")
    for name in images:
        if name not in by_file:
            raise DataError(f"image {img_dir / name} has no row in {csv_path}")
    return by_file, images


def load_silo_folder(path: str | Path, image_size: int, channels: int = 1,
                     class_names: tuple[str, ...] = CLASS_NAMES, masks: bool | None = None) -> SiloDataset:
    """Load one silo folder into a :class:`SiloDataset` (errors name the offending path).

    ``masks``: True requires ``masks/`` (segmentation), False ignores it, None loads it when the
    folder has one."""
    path = Path(path)
    img_dir, mask_dir, csv_path = path / "images", path / "masks", path / "labels.csv"
    for p, what in ((path, "silo folder"), (img_dir, "images folder")):
        if not p.is_dir():
            raise DataError(f"missing {what}: {p} (expected root/<silo>/images and root/<silo>/labels.csv)")
    if masks and not mask_dir.is_dir():
        raise DataError(f"missing masks folder: {mask_dir} (task: segmentation needs a mask per image, pixel "
                        "values 0 background, 1 catheter, 2 guidewire; classification needs none)")
    with_masks = mask_dir.is_dir() if masks is None else bool(masks)
    by_file, images = index_rows(path)
    imgs, msks, labels, tubes, doms, attrs = [], [], [], [], [], []
    for name in images:
        ip = img_dir / name
        r, row = by_file[name]
        labels.append(_parse(row["label"], class_names, "label", csv_path, r))
        tubes.append(_parse(row.get("tube") or "0", TUBE_NAMES, "tube", csv_path, r))
        doms.append(_parse(row.get("domain") or "human", DOMAINS, "domain", csv_path, r))
        try:
            a = float(row.get("attribute") or 0.0)
        except ValueError:
            raise DataError(f"{csv_path}, row {r}: attribute {row.get('attribute')!r} is not a number") from None
        attrs.append(a)
        im = _read_image(ip, "image", channels)
        t_im = torch.from_numpy(np.ascontiguousarray(im))
        t_im = (t_im[None] if t_im.dim() == 2 else t_im.permute(2, 0, 1))[None]  # (1, C, H, W)
        resize = t_im.shape[-2:] != (image_size, image_size)
        if resize:
            t_im = F.interpolate(t_im, size=(image_size, image_size), mode="bilinear", align_corners=False)
        imgs.append(t_im[0])
        if with_masks:
            mp = mask_dir / name
            if not mp.is_file() and (mask_dir / f"{Path(name).stem}.png").is_file():
                mp = mask_dir / f"{Path(name).stem}.png"
            if not mp.is_file():
                raise DataError(f"image {ip} has no mask: expected {mp}")
            mk = _read_image(mp, "mask")
            if mk.ndim != 2 or mk.shape != im.shape[:2]:
                raise DataError(f"mask {mp} has shape {mk.shape} but image {ip} has {im.shape[:2]}")
            if mk.min() < 0 or mk.max() > 2:
                raise DataError(f"mask {mp} has values {sorted(np.unique(mk).tolist())[:8]}; "
                                "allowed: 0 background, 1 catheter, 2 guidewire")
            t_mk = torch.from_numpy(np.ascontiguousarray(mk))[None, None].float()
            if resize:
                t_mk = F.interpolate(t_mk, size=(image_size, image_size), mode="nearest")
            msks.append(t_mk[0, 0].long())
    return SiloDataset(
        torch.stack(imgs).clamp(0, 1).float(), torch.stack(msks) if with_masks else None, torch.tensor(labels),
        torch.tensor(tubes), torch.tensor(doms), torch.tensor(attrs, dtype=torch.float32), None, path.name,
        [str(img_dir / n) for n in images],
    )


def silo_folders(root: str | Path) -> list[Path]:
    """The silo folders under ``root``, in silo order (sorted names; hidden folders, ``test`` and
    ``public`` are not silos)."""
    root = Path(root).expanduser()
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.name not in (TEST_DIR, PUBLIC_DIR))


def load_folder(root: str | Path, image_size: int, channels: int | None = None, classes: list | None = None,
                masks: bool | None = None) -> tuple[list[SiloDataset], SiloDataset | None, tuple[str, ...]]:
    """All silo folders under ``root`` (sorted by name), the optional ``root/test`` set and the
    class names. ``channels`` None: RGB when any image is in colour; ``masks`` as in
    :func:`load_silo_folder`, except that None keeps masks only when every folder has them."""
    if root is None:
        raise DataError("data.kind is 'folder' but data.root is not set")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder")
    silo_dirs = silo_folders(root)
    if not silo_dirs:
        raise DataError(f"no silo folders in {root} (expected {root}/<silo>/images and labels.csv)")
    test_dir = root / TEST_DIR
    folders = silo_dirs + ([test_dir] if test_dir.is_dir() else [])
    if masks is None:  # a classification dataset may have masks for some silos only: then none are used
        masks = all((p / "masks").is_dir() for p in folders)
    names = resolve_classes(root, folders, classes)
    channels = channels or detect_channels(folders)
    silos = [load_silo_folder(p, image_size, channels, names, masks) for p in silo_dirs]
    test = load_silo_folder(test_dir, image_size, channels, names, masks) if test_dir.is_dir() else None
    return silos, test, names


def save_folder(root: str | Path, silos: list[SiloDataset], test: SiloDataset | None = None,
                class_names: tuple[str, ...] | None = CLASS_NAMES) -> Path:
    """Write datasets in the folder layout (8-bit PNGs; masks when the data have them), with a
    ``classes.txt`` of ``class_names`` (the foundation classes by default; None: none), e.g. to
    export synthetic data."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if class_names:
        (root / CLASSES_FILE).write_text("\n".join(class_names) + "\n")
    parts = [(f"silo{i:02d}", ds) for i, ds in enumerate(silos)]
    if test is not None:
        parts.append((TEST_DIR, test))
    for name, ds in parts:
        (root / name / "images").mkdir(parents=True, exist_ok=True)
        if ds.masks is not None:
            (root / name / "masks").mkdir(parents=True, exist_ok=True)
        with open(root / name / "labels.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "label", "tube", "domain", "attribute"])
            for k in range(len(ds)):
                fname = f"{k:05d}.png"
                img = (ds.images[k].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(root / name / "images" / fname)
                if ds.masks is not None:
                    Image.fromarray(ds.masks[k].to(torch.uint8).numpy()).save(root / name / "masks" / fname)
                tube = 0 if ds.tube is None else int(ds.tube[k])
                domain = DOMAINS[0 if ds.domain is None else int(ds.domain[k])]
                w.writerow([fname, int(ds.labels[k]), tube, domain, f"{float(ds.attribute[k]):.6f}"])
    return root
