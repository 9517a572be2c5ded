"""The one dataset type shared by synthetic and folder data."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from rich import box
from rich.table import Table
from torch import Tensor

from fedsim.config.data import DOMAIN_SHORT, DOMAINS, NUM_CLASSES


@dataclass
class SiloDataset(torch.utils.data.Dataset):
    """Images, masks and labels of one silo (or of the global test set).

    ``images`` float32 (N, C, H, W) in [0, 1] (C = 1 grayscale, 3 RGB), or uint8 levels k
    meaning k / 255 once :meth:`compact` (read batches with :meth:`image_batch`); ``masks`` int64
    (uint8 once compact) (N, H, W) with 0 background, 1 catheter, 2 guidewire, or None (classification-only data);
    ``labels`` int64 (N,) class 0..num_classes-1 (possibly noisy); ``tube`` int64 (N,)
    0 normal / 1 borderline / 2 abnormal, or None; ``domain`` int64 (N,) index into
    :data:`DOMAINS`, or None (data without domains); ``attribute`` float32 (N,) an age-like scalar
    in [0, 1]; ``clean_labels`` the labels before label noise (equal to ``labels`` when there is
    none). ``__getitem__`` returns ``(image, label)``; use the tensors directly for other targets.
    """

    images: Tensor
    masks: Tensor | None
    labels: Tensor
    tube: Tensor | None
    domain: Tensor | None
    attribute: Tensor | None = None
    clean_labels: Tensor | None = None
    name: str = ""
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.attribute is None:
            self.attribute = torch.zeros(n, dtype=torch.float32)
        if self.clean_labels is None:
            self.clean_labels = self.labels.clone()
        for key in ("masks", "labels", "tube", "domain", "attribute", "clean_labels"):
            if getattr(self, key) is not None and getattr(self, key).shape[0] != n:
                raise ValueError(f"SiloDataset.{key} has {getattr(self, key).shape[0]} rows, images have {n}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i):
        return decode_images(self.images[i]), self.labels[i]

    def subset(self, index) -> SiloDataset:
        index = torch.as_tensor(index, dtype=torch.long)
        files = [self.files[i] for i in index.tolist()] if self.files else []
        take = lambda t: None if t is None else t[index]  # noqa: E731
        return SiloDataset(
            self.images[index], take(self.masks), self.labels[index], take(self.tube),
            take(self.domain), self.attribute[index], self.clean_labels[index], self.name, files,
        )

    @staticmethod
    def concat(parts: list[SiloDataset], name: str = "") -> SiloDataset:
        """One dataset of ``parts`` in order; an optional field (masks, tube, domain) is kept only
        when every part has it."""
        if not parts:
            raise ValueError("SiloDataset.concat needs at least one part")

        def cat(key):
            values = [getattr(p, key) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)

        files = [f for p in parts for f in p.files] if all(p.files for p in parts) else []
        return SiloDataset(cat("images"), cat("masks"), cat("labels"), cat("tube"), cat("domain"),
                           cat("attribute"), cat("clean_labels"), name, files)

    @staticmethod
    def from_tensors(images: Tensor, labels: Tensor, name: str = "") -> SiloDataset:
        """Classification-only data (no masks, tube labels or domains)."""
        return SiloDataset(images, None, labels, None, None, None, None, name)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def image_batch(self, index) -> Tensor:
        """Images ``index`` (a slice or indices) as float32 in [0, 1], whatever the storage."""
        return decode_images(self.images[index])

    def mask_batch(self, index) -> Tensor:
        """Masks ``index`` as int64, whatever the storage."""
        return self.masks[index].long()

    def compact(self, keep_masks: bool = True) -> SiloDataset:
        """This dataset stored compactly, in place: 8-bit images as uint8 (only when that is
        lossless: :meth:`image_batch` then gives bit-identical float32 batches), masks as uint8,
        or dropped when the run does not use them (``keep_masks`` False)."""
        self.images = compact_images(self.images)
        if not keep_masks:
            self.masks = None
        elif self.masks is not None and (self.masks.numel() == 0 or 0 <= int(self.masks.min())
                                         and int(self.masks.max()) < 256):
            self.masks = self.masks.to(torch.uint8)
        return self

    def nbytes(self) -> int:
        """Bytes of every tensor this dataset holds."""
        return sum(t.numel() * t.element_size() for t in (self.images, self.masks, self.labels, self.tube,
                                                           self.domain, self.attribute, self.clean_labels)
                   if t is not None)

    def class_counts(self, num_classes: int = NUM_CLASSES) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def domain_counts(self) -> list[int] | None:
        return None if self.domain is None else torch.bincount(self.domain, minlength=len(DOMAINS)).tolist()


@dataclass
class FederatedData:
    """``train[i]`` is silo i's training set (``None`` if not built, see ``load_federated(silos=)``);
    ``test`` the global held-out set drawn from every domain and class; ``val[i]`` silo i's own
    validation set where the data split one off (else None)."""

    train: list[SiloDataset]
    test: SiloDataset
    num_classes: int = NUM_CLASSES
    class_names: tuple[str, ...] | None = None  # None: the foundation classes (CLASS_NAMES)
    #: each silo's validation set when the data define one (MedMNIST's official split), indexed like
    #: ``train``; None: data.validation_fraction carves it from the training data
    val: list[SiloDataset | None] | None = None

    @property
    def num_silos(self) -> int:
        return len(self.train)

    @property
    def in_channels(self) -> int:
        """Image channels (1 grayscale, 3 RGB): what every model's stem is built for."""
        return self.test.channels

    def summary_table(self, title: str = "samples per silo"):
        """A rich table: samples per domain and per foundation class (c0..c5, see CLASS_NAMES) for
        every silo and the test set; ``noisy`` counts labels changed by label noise."""
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
        cols = ["silo", "n", *[DOMAIN_SHORT.get(d, d) for d in DOMAINS],
                *[f"c{c}" for c in range(self.num_classes)], "noisy"]
        for col in cols:
            table.add_column(col, justify="right", min_width=len(col), no_wrap=True)
        rows = [(str(i), ds) for i, ds in enumerate(self.train)] + [("test", self.test)]
        for key, ds in rows:
            if ds is None:  # not built on this rank (load_federated(..., silos=...))
                table.add_row(key, "-", *["-"] * (len(cols) - 2))
                continue
            dc = ds.domain_counts() or [None] * len(DOMAINS)
            cc = ds.class_counts(self.num_classes)
            noisy = int((ds.labels != ds.clean_labels).sum())
            table.add_row(key, str(len(ds)), *["-" if v is None else str(v) if v else "·" for v in dc],
                          *[str(v) if v else "·" for v in cc], str(noisy))
        return table


def cell_counts(datasets, num_classes: int) -> Tensor:
    """(len(DOMAINS), num_classes) int64: how many samples of ``datasets`` (None entries skipped)
    fall in each (domain, class) cell. The class is the clean label: a noisy label does not make
    an image of one class an example of another, so label noise adds no cell."""
    counts = torch.zeros(len(DOMAINS) * num_classes, dtype=torch.long)
    for ds in datasets:
        if ds is not None and len(ds):
            counts += torch.bincount(ds.domain.long() * num_classes + ds.clean_labels.long(),
                                     minlength=len(DOMAINS) * num_classes)
    return counts.view(len(DOMAINS), num_classes)


def in_union(test: SiloDataset, held: Tensor) -> Tensor:
    """Bool (len(test),): whether each test sample's (domain, clean class) cell is one that
    ``held`` (a :func:`cell_counts` table, over every silo's training data) counts at least once."""
    return held.bool()[test.domain.long(), test.clean_labels.long()]


def to_channels(images: Tensor, channels: int | None) -> Tensor:
    """(N, C, H, W) images converted to ``channels`` (None: unchanged): grayscale repeated to RGB,
    RGB to luminance (ITU-R 601, as PIL's "L")."""
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * w).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def quantize_8bit(images: Tensor) -> Tensor:
    """Float images in [0, 1] rounded to the 256 levels of an 8-bit image (k / 255, float32)."""
    return torch.round(images * 255.0).div_(255.0)


def compact_images(images: Tensor) -> Tensor:
    """``images`` as uint8 when every value is k / 255 exactly (8-bit data: synthetic, PNGs,
    torchvision), else unchanged. Decoding (:func:`decode_images`) computes ``k / 255`` in
    float32, the very operation that made the float values, so batches are bit-identical."""
    if images.dtype != torch.float32 or images.numel() == 0:
        return images
    levels = torch.round(images * 255.0)
    if levels.min() < 0 or levels.max() > 255 or not torch.equal(levels / 255.0, images):
        return images
    return levels.to(torch.uint8)


def decode_images(images: Tensor) -> Tensor:
    """Stored images as float32 in [0, 1]: uint8 levels divided by 255, float ones as they are."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images
