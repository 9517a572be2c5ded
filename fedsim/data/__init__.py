"""Federated endovascular X-ray data: synthetic generator, partitioners, folder loader.

``load_federated(cfg, num_silos, seed)`` is the one entry point the simulator uses; its result
depends only on its arguments, so every process builds bit-identical tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch

from fedsim.errors import DataError
from fedsim.settings import Range, section_from_dict

from . import partition as P
from .dataset import CLASS_NAMES, DOMAINS, NUM_CLASSES, SEG_NAMES, TUBE_NAMES, FederatedData, SiloDataset
from .synthetic import derive_seed, generate, make_generator

__all__ = [
    "CLASS_NAMES", "DOMAINS", "NUM_CLASSES", "SEG_NAMES", "TUBE_NAMES", "PARTITIONS",
    "DataConfig", "FederatedData", "SiloDataset", "carve_validation", "generate", "load_federated", "load_public",
    "derive_seed",
]

PARTITIONS = ("domain", "iid", "dirichlet", "quantity", "attribute")
KINDS = ("synthetic", "folder")


@dataclass
class DataConfig:
    """The experiment YAML ``data:`` section.

    kind: "synthetic" (generated) or "folder" (``root/<silo>/{images,masks}/*.png + labels.csv``).
    partition: "domain" (per-silo domain mixtures; FedEFM-style default cycle when ``domains`` is
    None), "iid", "dirichlet" (label skew, ``dirichlet_alpha``), "quantity" (size skew,
    ``quantity_skew``, default 1.0 when 0), "attribute" (age-like skew, ``attribute_skew``,
    default 1.0 when 0). ``unseen_fraction``, ``label_noise``, ``quantity_skew`` and
    ``attribute_skew`` also combine with any partition.
    """

    kind: str = "synthetic"
    root: str | None = None
    image_size: Annotated[int, Range(ge=16)] = 64
    samples_per_silo: Annotated[int, Range(ge=1)] = 256
    test_samples: Annotated[int, Range(ge=1)] = 512
    partition: Literal[PARTITIONS] = "domain"
    domains: list | None = None
    unseen_fraction: Annotated[float, Range(ge=0, le=1)] = 0.0
    dirichlet_alpha: Annotated[float, Range(gt=0)] = 0.5
    quantity_skew: Annotated[float, Range(ge=0)] = 0.0
    label_noise: Annotated[float, Range(ge=0, le=1)] = 0.0
    attribute_skew: Annotated[float, Range(ge=0)] = 0.0  # 0 = none; s > 0: each silo's attribute centred on its own value
    test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.2  # folder data without root/test: share held out from each silo
    seed_offset: Annotated[int, Range(ge=0)] = 0  # change the data without changing the experiment seed
    validation_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.0  # share of each silo's training data held
    #                                   out for choosing hyper-parameters (never the test set); 0 = none

    @classmethod
    def from_dict(cls, d: dict | None) -> DataConfig:
        return section_from_dict(cls, d, "data", DataError)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"data.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.partition not in PARTITIONS:
            raise DataError(f"data.partition must be one of {', '.join(PARTITIONS)}, got {self.partition!r}")
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
        if self.kind == "folder" and not self.root:
            raise DataError("data.kind is 'folder' but data.root is not set")
        if self.kind == "folder" and not Path(self.root).is_dir():
            raise DataError(f"data.root {self.root} is not a folder; see README 'Your own data' for the layout")


def _skews(cfg: DataConfig) -> tuple[float, float]:
    q = cfg.quantity_skew or (1.0 if cfg.partition == "quantity" else 0.0)
    a = cfg.attribute_skew or (1.0 if cfg.partition == "attribute" else 0.0)
    return float(q), float(a)


def load_federated(cfg: DataConfig, num_silos: int, seed: int, silos=None) -> FederatedData:
    """Build every silo's training set and the global test set from (cfg, num_silos, seed).

    ``silos`` (optional): build only these silo ids — the others are
    ``None`` in ``train`` — so a rank hosting a few of 87 silos does not generate all of them.
    Each silo's tensors are identical whether built alone or with all the others.
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
        fd = _load_folder_federated(cfg, num_silos, seed)
        fd.train = [ds if i in wanted else None for i, ds in enumerate(fd.train)]
        return fd
    return _load_synthetic(cfg, num_silos, seed, wanted)


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


def _load_synthetic(cfg: DataConfig, num_silos: int, seed: int, wanted: set[int]) -> FederatedData:
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
        train.append(ds)
    return FederatedData(train, _synthetic_test(cfg, seed), NUM_CLASSES)


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
        from pathlib import Path

        from .folder import load_silo_folder

        path = Path(cfg.root).expanduser() / "public"
        if not path.is_dir():
            raise DataError(f"folder data has no public set: create {path} (images/, masks/, labels.csv)")
        return load_silo_folder(path, cfg.image_size)
    k = torch.arange(n)
    return generate(n, domains=k % len(DOMAINS), labels=(k // len(DOMAINS)) % NUM_CLASSES,
                    image_size=cfg.image_size, seed=derive_seed(seed, 6), name="public")


def _load_folder_federated(cfg: DataConfig, num_silos: int, seed: int) -> FederatedData:
    from .folder import load_folder

    silos, test = load_folder(cfg.root, cfg.image_size)
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
    qskew, askew = _skews(cfg)
    if cfg.partition == "domain" and cfg.domains is None:
        if len(silos) != num_silos:
            raise DataError(f"{cfg.root} has {len(silos)} silo folders but the run has {num_silos} silos; "
                            "match them, or set data.partition to iid/dirichlet/quantity/attribute to re-split")
        train = silos
    else:  # pool every silo folder and re-split
        pool = SiloDataset.concat(silos)
        n = len(pool)
        if cfg.partition == "dirichlet":
            parts = P.split_dirichlet(pool.labels, num_silos, float(cfg.dirichlet_alpha), g, NUM_CLASSES)
        elif cfg.partition == "quantity":
            parts = P.split_quantity(n, num_silos, qskew, g)
        elif cfg.partition == "attribute":
            parts = P.split_attribute(pool.attribute, num_silos, askew, g)
        elif cfg.partition == "domain":
            mix = P.silo_mixtures(cfg.domains, "domain", num_silos)
            parts = P.split_domain(pool.domain, mix, P.largest_remainder([1.0] * num_silos, n), g)
        else:
            parts = P.split_iid(n, num_silos, g)
        train = [pool.subset(p) for p in parts]
        for i, ds in enumerate(train):
            ds.name = f"silo{i}"
    if cfg.unseen_fraction > 0:
        seen = P.seen_classes(num_silos, NUM_CLASSES, float(cfg.unseen_fraction), g)
        train = [ds.subset(P.restrict_unseen(ds.labels, [torch.arange(len(ds))], [s])[0])
                 for ds, s in zip(train, seen)]
    if cfg.label_noise > 0:
        for ds in train:
            ds.labels = P.symmetric_label_noise(ds.labels, float(cfg.label_noise), NUM_CLASSES, g)
    for i, ds in enumerate(train):
        if len(ds) == 0:
            raise DataError(f"{cfg.root}: silo {i} ({ds.name}) has no training images after partitioning")
    return FederatedData(train, test, NUM_CLASSES)
