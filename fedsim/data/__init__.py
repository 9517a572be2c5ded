"""Federated data: the synthetic X-ray generator, partitioners, and loaders for your own data
(folders, torchvision datasets from a local root, MedMNIST's files, Python plug-ins).

``load_federated(cfg, num_silos, seed)`` is the one entry point the simulator uses; its result
depends only on its arguments, so every process builds bit-identical tensors.
"""

from __future__ import annotations

import ctypes
import gc
from pathlib import Path

import torch

from fedsim.config.data import (
    CLASS_NAMES,
    DOMAINS,
    KINDS,
    LABELS,
    NUM_CLASSES,
    NUM_SEG_CLASSES,
    PARTITIONS,
    SEG_NAMES,
    TUBE_NAMES,
    DataConfig,
)
from fedsim.errors import DataError

from . import partition as P
from .dataset import (
    FederatedData,
    SiloDataset,
    cell_counts,
    in_union,
    to_channels,
)
from .folder import PUBLIC_DIR, detect_channels, load_folder, load_silo_folder, read_rows, silo_folders
from .medmnist import load_medmnist
from .plugin import load_python
from .synthetic import derive_seed, generate, make_generator
from .vision import load_torchvision

__all__ = [
    "CLASS_NAMES", "DOMAINS", "NUM_CLASSES", "NUM_SEG_CLASSES", "SEG_NAMES", "TUBE_NAMES", "PARTITIONS", "KINDS", "LABELS",
    "DataConfig", "FederatedData", "SiloDataset", "carve_validation", "generate", "load_federated", "load_public",
    "derive_seed", "cell_counts", "in_union", "source_mixtures", "domains_in_use",
]


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
        fd = load_torchvision(cfg, num_silos, seed, wanted)
    elif cfg.kind == "python":
        fd = load_python(cfg, num_silos, seed, wanted)
    elif cfg.kind == "medmnist":
        fd = load_medmnist(cfg, num_silos, seed, wanted)
    else:
        fd = _load_synthetic(cfg, num_silos, seed, wanted, (masks,) if compact else None)
        if cfg.channels == 3:  # grayscale X-rays for an RGB model (the silos are converted as built)
            fd.test.images = to_channels(fd.test.images, 3)
    if masks and fd.test.masks is None:
        raise DataError(f"task: segmentation needs per-pixel masks, and data.kind {cfg.kind!r} has none"
                        + (f" (add {cfg.root}/<silo>/masks/)" if cfg.kind == "folder" else ""))
    if compact:
        for ds in [*fd.train, fd.test, *(fd.val or [])]:
            if ds is not None:
                ds.compact(keep_masks=masks)
    release_freed_memory()
    return fd


def release_freed_memory() -> None:
    """Hand the heap that loading freed (decoded files, generator temporaries, the factory's own
    copies) back to the OS. glibc keeps freed large blocks mapped once its mmap threshold has
    grown, so without this a rank stays at its loading peak for the whole run."""
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
    qskew, askew = P.skews(cfg)
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
    qskew, askew = P.skews(cfg)
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
        path = Path(cfg.root).expanduser() / "public"
        if not path.is_dir():
            raise DataError(f"folder data has no public set: create {path} (images/, labels.csv)")
        # its labels are never read: any name parses
        names = tuple(sorted({r["label"] for r in _csv_rows(path / "labels.csv")}))
        channels = cfg.channels or _folder_channels(cfg)
        return load_silo_folder(path, cfg.image_size, channels, names, masks=False)
    if cfg.kind in ("torchvision", "python", "medmnist"):
        raise DataError(f"data.kind {cfg.kind} has no public set (FedDF, FedMD and MDH-FL distil on one); "
                        "use synthetic or folder data (root/public) for these algorithms")
    k = torch.arange(n)
    ds = generate(n, domains=k % len(DOMAINS), labels=(k // len(DOMAINS)) % NUM_CLASSES,
                  image_size=cfg.image_size, seed=derive_seed(seed, 6), name="public")
    ds.images = to_channels(ds.images, cfg.channels)
    return ds


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return read_rows(path)


def _folder_channels(cfg: DataConfig) -> int:
    """The channels ``load_folder`` chose for the silos and the test set."""
    root = Path(cfg.root).expanduser()
    return detect_channels([p for p in sorted(root.iterdir()) if p.is_dir() and p.name != PUBLIC_DIR])


def silo_names(cfg: DataConfig) -> list[str] | None:
    """The names the data give the silos — folder data whose silo folders are the silos (partition
    ``domain`` without mixtures): the folder names — else None. Read from a listing, no image."""
    if cfg.kind != "folder" or cfg.partition != "domain" or cfg.domains is not None or not cfg.root:
        return None
    root = Path(cfg.root).expanduser()
    return [p.name for p in silo_folders(root)] if root.is_dir() else None


def _load_folder_federated(cfg: DataConfig, num_silos: int, seed: int, masks: bool = False) -> FederatedData:
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
        parts = P.split_pool(cfg, num_silos, num_classes, pool.labels, pool.domain, pool.attribute, g, str(cfg.root))
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


