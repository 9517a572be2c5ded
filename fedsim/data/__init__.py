"""Federated data: the synthetic X-ray generator, partitioners, and loaders for your own data
(folders, torchvision datasets from a local root, Python plug-ins).

``load_federated(cfg, num_silos, seed)`` is the one entry point the simulator uses; its result
depends only on its arguments, so every process builds bit-identical tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch import Tensor

from fedsim.errors import DataError
from fedsim.plugins import is_import_path
from fedsim.settings import Range, section_from_dict

from . import partition as P
from .dataset import (
    CLASS_NAMES,
    DOMAINS,
    NUM_CLASSES,
    SEG_NAMES,
    TUBE_NAMES,
    FederatedData,
    SiloDataset,
    cell_counts,
    in_union,
    to_channels,
)
from .synthetic import derive_seed, generate, make_generator

__all__ = [
    "CLASS_NAMES", "DOMAINS", "NUM_CLASSES", "SEG_NAMES", "TUBE_NAMES", "PARTITIONS", "KINDS", "LABELS",
    "DataConfig", "FederatedData", "SiloDataset", "carve_validation", "generate", "load_federated", "load_public",
    "derive_seed", "cell_counts", "in_union", "source_mixtures", "domains_in_use",
]

PARTITIONS = ("domain", "iid", "dirichlet", "quantity", "attribute")
KINDS = ("synthetic", "folder", "torchvision", "python")
LABELS = ("route", "source")  # what the synthetic foundation label is (DataConfig.label)


@dataclass
class DataConfig:
    """The experiment YAML ``data:`` section: where the silos' data come from and how they are split.

    kind: "synthetic" (generated), "folder" (``root/<silo>/images/* + labels.csv``, ``masks/``
    for segmentation), "torchvision" (``torchvision.datasets.<name>`` read from ``root``) or
    "python" (a plug-in ``factory(num_silos=N, seed=S, **args) -> (train_sets, test_set)``).
    partition: "domain" (per-silo domain mixtures; FedEFM-style default cycle when ``domains`` is
    None; folder data: the silo folders as they are; data without domains: iid), "iid",
    "dirichlet" (label skew, ``dirichlet_alpha``), "quantity" (size skew, ``quantity_skew``,
    default 1.0 when 0), "attribute" (age-like skew, ``attribute_skew``, default 1.0 when 0).
    ``unseen_fraction``, ``label_noise``, ``quantity_skew`` and ``attribute_skew`` also combine
    with any partition.
    label (synthetic data): "route" (the vessel-route shape, 6 classes independent of the domain) or
    "source" (the image's domain, the data source; the classes are the domains in use, see
    :func:`source_mixtures`, which says what "unseen" then means).
    """

    kind: str = "synthetic"  # synthetic (generated X-rays) | folder (root/<silo>/...) | torchvision | python (a plug-in)
    root: str | None = None          # folder data / torchvision root
    label: Literal[LABELS] = "route"  # synthetic foundation label: route (vessel shape, 6 classes) | source
    #                                   (the image's domain; classes = the domains some silo's mixture holds)
    image_size: Annotated[int, Range(ge=16)] = 64  # synthetic and folder data (torchvision and python: their own size)
    channels: int | None = None      # 1 grayscale | 3 RGB | None: the data's own (synthetic: 1)
    classes: list | None = None      # class names (folder data; python data: their number); None: from the data
    samples_per_silo: Annotated[int, Range(ge=1)] = 256  # synthetic: training images per silo on average (quantity skew moves them)
    test_samples: Annotated[int, Range(ge=1)] = 512  # synthetic: test images, balanced over every domain and class
    partition: Literal[PARTITIONS] = "domain"  # how data is split over silos: domain mixtures | iid | dirichlet
    #                                label skew | quantity (size) skew | attribute (age-like) skew
    domains: list | None = None  # per-silo domain mixtures, cycled over the silos: a name, a list of names or
    #                                {name: weight}; None: the FedEFM-style default for partition domain
    unseen_fraction: Annotated[float, Range(ge=0, le=1)] = 0.0  # share of the classes outside its own that each
    #                                silo never sees (1: only its own classes, so no two silos share one)
    dirichlet_alpha: Annotated[float, Range(gt=0)] = 0.5  # partition dirichlet: α of the label skew (smaller: more skewed)
    quantity_skew: Annotated[float, Range(ge=0)] = 0.0  # s: silo size ∝ (rank + 1)^-s over a random ranking (0: equal sizes;
    #                                partition quantity: 1 when 0)
    label_noise: Annotated[float, Range(ge=0, le=1)] = 0.0  # share of each silo's training labels flipped at random (symmetric noise)
    attribute_skew: Annotated[float, Range(ge=0)] = 0.0  # 0 = none; s > 0: each silo's attribute centred on its own value
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.2  # folder data without root/test: share held out from each silo
    seed_offset: Annotated[int, Range(ge=0)] = 0  # change the data without changing the experiment seed
    validation_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.0  # share of each silo's training data held
    #                                   out for choosing hyper-parameters (never the test set); 0 = none
    name: str | None = None          # kind torchvision: the dataset class, e.g. MNIST, FashionMNIST, CIFAR10
    download: bool = False           # kind torchvision: fetch into root when missing (never by default)
    factory: str | None = None       # kind python: "package.module:function"
    args: dict = field(default_factory=dict)  # keyword arguments of the python factory / torchvision class

    @classmethod
    def from_dict(cls, d: dict | None) -> DataConfig:
        return section_from_dict(cls, d, "data", DataError)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"data.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.partition not in PARTITIONS:
            raise DataError(f"data.partition must be one of {', '.join(PARTITIONS)}, got {self.partition!r}")
        if self.label not in LABELS:
            raise DataError(f"data.label must be one of {', '.join(LABELS)}, got {self.label!r}")
        if self.label == "source":
            self._check_source_label()
        for key, lo in (("image_size", 16), ("samples_per_silo", 1), ("test_samples", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise DataError(f"data.{key} must be an integer >= {lo}, got {v!r}")
        if not isinstance(self.validation_fraction, (int, float)) or not 0.0 <= self.validation_fraction < 1.0:
            raise DataError(f"data.validation_fraction must be a number in [0, 1), got {self.validation_fraction!r}")
        for key in ("unseen_fraction", "label_noise", "test_fraction"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise DataError(f"data.{key} must be a number in [0, 1], got {v!r}")
        for key in ("quantity_skew", "attribute_skew"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or v < 0:
                raise DataError(f"data.{key} must be a number >= 0, got {v!r}")
        if not isinstance(self.dirichlet_alpha, (int, float)) or not self.dirichlet_alpha > 0:
            raise DataError(f"data.dirichlet_alpha must be > 0, got {self.dirichlet_alpha!r}")
        if self.channels not in (None, 1, 3):
            raise DataError(f"data.channels must be 1 (grayscale), 3 (RGB) or null (the data's own), got {self.channels!r}")
        if self.classes is not None and (not isinstance(self.classes, list) or len(self.classes) < 2
                                         or len({str(c) for c in self.classes}) != len(self.classes)):
            raise DataError(f"data.classes must be a list of at least two distinct class names, got {self.classes!r}")
        if not isinstance(self.args, dict):
            raise DataError(f"data.args must be a mapping of keyword arguments, got {self.args!r}")
        if self.kind == "folder" and not self.root:
            raise DataError("data.kind is 'folder' but data.root is not set")
        if self.kind == "folder" and not Path(self.root).expanduser().is_dir():
            raise DataError(f"data.root {self.root} is not a folder; see 'Your own data' in docs/data-and-models.md for the layout")
        if self.kind == "torchvision":
            from .vision import check_config

            check_config(self)
        if self.kind == "python":
            if not is_import_path(self.factory):
                raise DataError(f"data.kind is 'python' but data.factory is {self.factory!r}; set it to "
                                "'package.module:function' returning (train_sets, test_set)")
            from fedsim.plugins import resolve

            resolve(self.factory, "data.factory", DataError)

    def _check_source_label(self) -> None:
        """The combinations in which "the label is the data source" has a meaning (see
        :func:`source_mixtures`)."""
        if self.kind != "synthetic":
            raise DataError(f"data.label: source labels each image with its generator domain and needs "
                            f"data.kind: synthetic (got {self.kind}); give your own data its own labels instead")
        if self.partition == "domain" and self.unseen_fraction:
            raise DataError(f"data.label: source with data.partition: domain: the domain mixtures already decide "
                            f"which sources (labels) each silo holds, so data.unseen_fraction must be 0 (got "
                            f"{self.unseen_fraction}); or use data.partition: iid to let unseen_fraction pick them")
        if self.partition != "domain" and self.domains is not None:
            raise DataError(f"data.label: source with data.partition: {self.partition}: the partition picks each "
                            "silo's sources (labels), so remove data.domains or use data.partition: domain")

    @property
    def has_domains(self) -> bool:
        """Whether samples carry a domain (synthetic X-ray and folder data do)."""
        return self.kind in ("synthetic", "folder")


def _skews(cfg: DataConfig) -> tuple[float, float]:
    q = cfg.quantity_skew or (1.0 if cfg.partition == "quantity" else 0.0)
    a = cfg.attribute_skew or (1.0 if cfg.partition == "attribute" else 0.0)
    return float(q), float(a)


def load_federated(cfg: DataConfig, num_silos: int, seed: int, silos=None, masks: bool = False,
                   compact: bool = False) -> FederatedData:
    """Build every silo's training set and the global test set from (cfg, num_silos, seed).

    ``silos`` (optional): build only these silo ids — the others are
    ``None`` in ``train`` — so a rank hosting a few of 87 silos does not generate all of them.
    Each silo's tensors are identical whether built alone or with all the others.
    ``masks``: the run needs per-pixel masks (``task: segmentation``); data without them is an error.
    ``compact``: store every set as :meth:`SiloDataset.compact` does (8-bit images as uint8, masks
    only when ``masks``), each synthetic silo as soon as it is generated, so loading never holds
    more than one silo in float.
    """
    if isinstance(cfg, dict):
        cfg = DataConfig.from_dict(cfg)
    cfg.validate()
    if num_silos < 1:
        raise DataError(f"need at least one silo, got {num_silos}")
    seed = int(seed) + int(cfg.seed_offset)
    wanted = set(range(num_silos)) if silos is None else {int(i) for i in silos}
    bad = sorted(i for i in wanted if not 0 <= i < num_silos)
    if bad:
        raise DataError(f"silo ids {bad} are not in 0..{num_silos - 1}")
    if cfg.kind == "folder":
        fd = _load_folder_federated(cfg, num_silos, seed, masks)
        fd.train = [ds if i in wanted else None for i, ds in enumerate(fd.train)]
    elif cfg.kind == "torchvision":
        from .vision import load_torchvision

        fd = load_torchvision(cfg, num_silos, seed, wanted)
    elif cfg.kind == "python":
        from .plugin import load_python

        fd = load_python(cfg, num_silos, seed, wanted)
    else:
        fd = _load_synthetic(cfg, num_silos, seed, wanted, (masks,) if compact else None)
        if cfg.channels == 3:  # grayscale X-rays for an RGB model (the silos are converted as built)
            fd.test.images = to_channels(fd.test.images, 3)
    if masks and fd.test.masks is None:
        raise DataError(f"task: segmentation needs per-pixel masks, and data.kind {cfg.kind!r} has none"
                        + (f" (add {cfg.root}/<silo>/masks/)" if cfg.kind == "folder" else ""))
    if compact:
        for ds in [*fd.train, fd.test]:
            if ds is not None:
                ds.compact(keep_masks=masks)
    release_freed_memory()
    return fd


def release_freed_memory() -> None:
    """Hand the heap that loading freed (decoded files, generator temporaries, the factory's own
    copies) back to the OS. glibc keeps freed large blocks mapped once its mmap threshold has
    grown, so without this a rank stays at its loading peak for the whole run."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def carve_validation(train: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training sets, validation sets): each built silo's data split by a seeded permutation of
    its own (the same whatever the placement); ``round(fraction · n)`` samples, at least one when
    ``fraction`` > 0 and the silo has two or more, go to validation."""
    if fraction <= 0:
        return train, [None] * len(train)
    kept, held = [], []
    for i, ds in enumerate(train):
        if ds is None:
            kept.append(None)
            held.append(None)
            continue
        n = len(ds)
        n_val = min(max(round(fraction * n), 1), n - 1) if n > 1 else 0
        order = torch.randperm(n, generator=make_generator(seed, 17, i))
        kept.append(ds.subset(order[n_val:].sort().values))
        held.append(ds.subset(order[:n_val].sort().values))
    return kept, held


def _load_synthetic(cfg: DataConfig, num_silos: int, seed: int, wanted: set[int],
                    compact: tuple[bool] | None = None) -> FederatedData:
    """Every wanted silo and the test set; with ``compact`` (keep_masks,) each compacted at once."""
    if cfg.label == "source":
        return _load_synthetic_sources(cfg, num_silos, seed, wanted, compact)
    g = make_generator(seed, 3)
    qskew, askew = _skews(cfg)
    sizes = P.quantity_sizes(num_silos, cfg.samples_per_silo, qskew, g)
    mixtures = P.silo_mixtures(cfg.domains, cfg.partition, num_silos)
    seen = P.seen_classes(num_silos, NUM_CLASSES, float(cfg.unseen_fraction), g)
    alpha = float(cfg.dirichlet_alpha) if cfg.partition == "dirichlet" else None
    props = P.class_proportions(seen, NUM_CLASSES, alpha, g)
    train = []
    for i in range(num_silos):
        if i not in wanted:
            train.append(None)
            continue
        gi = make_generator(seed, 5, i)  # per-silo stream: silo i does not depend on the others
        n = sizes[i]
        dom = generate_domain_ids(mixtures[i], n)
        counts = P.largest_remainder(props[i].tolist(), n)
        labels = torch.cat([torch.full((c,), k, dtype=torch.long) for k, c in enumerate(counts)])
        labels = labels[torch.randperm(n, generator=gi)]
        attr = P.attribute_values(n, i, num_silos, askew, gi)
        ds = generate(n, domains=dom, labels=labels, attribute=attr, image_size=cfg.image_size,
                      seed=derive_seed(seed, 1, i), name=f"silo{i}")
        if cfg.label_noise > 0:
            ds.labels = P.symmetric_label_noise(ds.labels, float(cfg.label_noise), NUM_CLASSES, gi)
        if cfg.channels == 3:  # grayscale X-rays for an RGB model
            ds.images = to_channels(ds.images, 3)
        train.append(ds.compact(*compact) if compact else ds)
    return FederatedData(train, _synthetic_test(cfg, seed), NUM_CLASSES)


def source_mixtures(cfg: DataConfig, num_silos: int, g: torch.Generator) -> list[dict[str, float]]:
    """Each silo's domain mixture when the label is the data source (``data.label: source``).

    A silo's labels are then the sources it holds, so its *seen labels* are the domains of its
    mixture. ``partition: domain``: the mixtures of ``data.domains`` (or the FedEFM-style default)
    say which sources each silo holds, and ``unseen_fraction`` must be 0. Any other partition: the
    sources are dealt like classes (:func:`partition.seen_classes` over the four domains: home
    sources plus round((1 − f)·#others) random others, so f = 1 gives every silo its own sources),
    spread uniformly over them, or by Dirichlet(``dirichlet_alpha``) for ``partition: dirichlet``."""
    if cfg.partition == "domain":
        return P.silo_mixtures(cfg.domains, "domain", num_silos)
    seen = P.seen_classes(num_silos, len(DOMAINS), float(cfg.unseen_fraction), g)
    alpha = float(cfg.dirichlet_alpha) if cfg.partition == "dirichlet" else None
    props = P.class_proportions(seen, len(DOMAINS), alpha, g)
    return [{DOMAINS[d]: float(p) for d, p in enumerate(row.tolist()) if p > 0} for row in props]


def domains_in_use(mixtures: list[dict[str, float]]) -> list[int]:
    """Indices (into :data:`DOMAINS`, in that order) of the domains some mixture gives weight."""
    return [d for d, name in enumerate(DOMAINS) if any(m.get(name, 0.0) > 0 for m in mixtures)]


def _load_synthetic_sources(cfg: DataConfig, num_silos: int, seed: int, wanted: set[int],
                            compact: tuple[bool] | None) -> FederatedData:
    """``data.label: source``: the label of an image is the position of its domain among the
    domains in use (with all four in use, the domain index itself); the vessel route is drawn
    uniformly, whatever the silo. The test set is balanced over the domains in use: a domain no
    silo holds is no class of the task."""
    g = make_generator(seed, 3)
    qskew, askew = _skews(cfg)
    sizes = P.quantity_sizes(num_silos, cfg.samples_per_silo, qskew, g)
    mixtures = source_mixtures(cfg, num_silos, g)  # every silo's, so every rank finds the same classes
    used = domains_in_use(mixtures)
    label_of = torch.full((len(DOMAINS),), -1, dtype=torch.long)
    label_of[used] = torch.arange(len(used))
    train = []
    for i in range(num_silos):
        if i not in wanted:
            train.append(None)
            continue
        gi = make_generator(seed, 5, i)
        n = sizes[i]
        dom = generate_domain_ids(mixtures[i], n)
        attr = P.attribute_values(n, i, num_silos, askew, gi)
        ds = generate(n, domains=dom, attribute=attr, image_size=cfg.image_size, seed=derive_seed(seed, 1, i),
                      name=f"silo{i}")
        ds.labels = label_of[ds.domain]
        ds.clean_labels = ds.labels.clone()
        if cfg.label_noise > 0:
            ds.labels = P.symmetric_label_noise(ds.labels, float(cfg.label_noise), len(used), gi)
        if cfg.channels == 3:
            ds.images = to_channels(ds.images, 3)
        train.append(ds.compact(*compact) if compact else ds)
    k = torch.arange(cfg.test_samples)
    test = generate(cfg.test_samples, domains=torch.tensor(used)[k % len(used)], labels=(k // len(used)) % NUM_CLASSES,
                    image_size=cfg.image_size, seed=derive_seed(seed, 2), name="test")
    test.labels = k % len(used)
    test.clean_labels = test.labels.clone()
    return FederatedData(train, test, len(used), tuple(DOMAINS[d] for d in used))


def generate_domain_ids(mixture: dict[str, float], n: int) -> torch.Tensor:
    names = list(mixture)
    counts = P.largest_remainder([mixture[k] for k in names], n)
    return torch.cat([torch.full((c,), DOMAINS.index(k), dtype=torch.long) for k, c in zip(names, counts)])


def _synthetic_test(cfg: DataConfig, seed: int) -> SiloDataset:
    """Balanced over every (domain, class) pair; uniform attribute; clean labels."""
    n = cfg.test_samples
    k = torch.arange(n)
    dom = k % len(DOMAINS)
    labels = (k // len(DOMAINS)) % NUM_CLASSES
    return generate(n, domains=dom, labels=labels, image_size=cfg.image_size, seed=derive_seed(seed, 2),
                    name="test")


def load_public(cfg: DataConfig, n: int, seed: int) -> SiloDataset:
    """A shared public / proxy set (MDH-FL alignment, FM-instructed distillation): synthetic,
    balanced over every domain and class, from its own seed stream (disjoint from silos and test).
    For folder data it is ``root/public`` in the silo layout."""
    if isinstance(cfg, dict):
        cfg = DataConfig.from_dict(cfg)
    cfg.validate()
    seed = int(seed) + int(cfg.seed_offset)
    if cfg.kind == "folder":
        from .folder import load_silo_folder

        path = Path(cfg.root).expanduser() / "public"
        if not path.is_dir():
            raise DataError(f"folder data has no public set: create {path} (images/, labels.csv)")
        # its labels are never read: any name parses
        names = tuple(sorted({r["label"] for r in _csv_rows(path / "labels.csv")}))
        channels = cfg.channels or _folder_channels(cfg)
        return load_silo_folder(path, cfg.image_size, channels, names, masks=False)
    if cfg.kind in ("torchvision", "python"):
        raise DataError(f"data.kind {cfg.kind} has no public set (FedDF, FedMD and MDH-FL distil on one); "
                        "use synthetic or folder data (root/public) for these algorithms")
    k = torch.arange(n)
    ds = generate(n, domains=k % len(DOMAINS), labels=(k // len(DOMAINS)) % NUM_CLASSES,
                  image_size=cfg.image_size, seed=derive_seed(seed, 6), name="public")
    ds.images = to_channels(ds.images, cfg.channels)
    return ds


def _csv_rows(path: Path) -> list[dict[str, str]]:
    from .folder import _read_rows

    return _read_rows(path)


def _folder_channels(cfg: DataConfig) -> int:
    """The channels ``load_folder`` chose for the silos and the test set."""
    from .folder import PUBLIC_DIR, detect_channels

    root = Path(cfg.root).expanduser()
    return detect_channels([p for p in sorted(root.iterdir()) if p.is_dir() and p.name != PUBLIC_DIR])


def silo_names(cfg: DataConfig) -> list[str] | None:
    """The names the data give the silos — folder data whose silo folders are the silos (partition
    ``domain`` without mixtures): the folder names — else None. Read from a listing, no image."""
    if cfg.kind != "folder" or cfg.partition != "domain" or cfg.domains is not None or not cfg.root:
        return None
    from .folder import silo_folders

    root = Path(cfg.root).expanduser()
    return [p.name for p in silo_folders(root)] if root.is_dir() else None


def _load_folder_federated(cfg: DataConfig, num_silos: int, seed: int, masks: bool = False) -> FederatedData:
    from .folder import load_folder

    silos, test, names = load_folder(cfg.root, cfg.image_size, cfg.channels, cfg.classes, True if masks else None)
    num_classes = len(names)
    g = make_generator(seed, 4)
    if test is None:  # hold out test_fraction of every silo
        held, kept = [], []
        for ds in silos:
            perm = torch.randperm(len(ds), generator=g)
            k = int(round(cfg.test_fraction * len(ds)))
            if k == 0 or k == len(ds):
                raise DataError(f"{cfg.root}: silo {ds.name} has {len(ds)} images, too few to hold out "
                                f"test_fraction={cfg.test_fraction}; add a {cfg.root}/test folder instead")
            held.append(ds.subset(perm[:k].sort().values))
            kept.append(ds.subset(perm[k:].sort().values))
        silos, test = kept, SiloDataset.concat(held, "test")
    if cfg.partition == "domain" and cfg.domains is None:
        if len(silos) != num_silos:
            raise DataError(f"{cfg.root} has {len(silos)} silo folders but the run has {num_silos} silos; "
                            "match them, or set data.partition to iid/dirichlet/quantity/attribute to re-split")
        train = silos
        if cfg.unseen_fraction > 0:
            seen = P.seen_classes(num_silos, num_classes, float(cfg.unseen_fraction), g)
            train = [ds.subset(P.restrict_unseen(ds.labels, [torch.arange(len(ds))], [s])[0])
                     for ds, s in zip(train, seen)]
    else:  # pool every silo folder and re-split
        pool = SiloDataset.concat(silos)
        parts = split_pool(cfg, num_silos, num_classes, pool.labels, pool.domain, pool.attribute, g, str(cfg.root))
        train = [pool.subset(p) for p in parts]
        for i, ds in enumerate(train):
            ds.name = f"silo{i}"
    if cfg.label_noise > 0:
        for ds in train:
            ds.labels = P.symmetric_label_noise(ds.labels, float(cfg.label_noise), num_classes, g)
    for i, ds in enumerate(train):
        if len(ds) == 0:
            raise DataError(f"{cfg.root}: silo {i} ({ds.name}) has no training images after partitioning")
    return FederatedData(train, test, num_classes, names)


def split_pool(cfg: DataConfig, num_silos: int, num_classes: int, labels: Tensor, domain: Tensor | None,
               attribute: Tensor | None, g: torch.Generator, source: str) -> list[Tensor]:
    """Indices of each silo's share of a pooled dataset under ``cfg.partition`` (then without the
    classes each silo must not see, ``cfg.unseen_fraction``). Data without domains split iid under
    the default ``partition: domain``; an explicit domain mixture or an attribute skew needs
    domains / attributes, and their absence is an error naming ``source``."""
    n = labels.numel()
    qskew, askew = _skews(cfg)
    if n < num_silos:
        raise DataError(f"{source}: {n} training samples cannot fill {num_silos} silos")
    if cfg.partition == "dirichlet":
        parts = P.split_dirichlet(labels, num_silos, float(cfg.dirichlet_alpha), g, num_classes)
    elif cfg.partition == "quantity":
        parts = P.split_quantity(n, num_silos, qskew, g)
    elif cfg.partition == "attribute":
        if attribute is None or not attribute.any():
            raise DataError(f"{source}: data.partition attribute needs a per-sample attribute, which this data "
                            "lacks; choose iid, dirichlet or quantity")
        parts = P.split_attribute(attribute, num_silos, askew, g)
    elif cfg.partition == "domain" and domain is not None:
        mix = P.silo_mixtures(cfg.domains, "domain", num_silos)
        parts = P.split_domain(domain, mix, P.largest_remainder([1.0] * num_silos, n), g)
    elif cfg.partition == "domain" and cfg.domains is not None:
        raise DataError(f"{source}: data.domains mixes domains, but this data has none; remove data.domains "
                        "or choose data.partition iid, dirichlet or quantity")
    else:
        parts = P.split_iid(n, num_silos, g)
    if cfg.unseen_fraction > 0:
        seen = P.seen_classes(num_silos, num_classes, float(cfg.unseen_fraction), g)
        parts = P.restrict_unseen(labels, parts, seen)
    return parts
