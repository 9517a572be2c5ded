"""The ``data:`` section, and the names of the synthetic X-ray data it (and ``downstream:``)
can use: domains, foundation classes, tube positions, segmentation classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from fedsim.config.medmnist import FLAGS as MEDMNIST_FLAGS
from fedsim.config.medmnist import RECORD as MEDMNIST_RECORD
from fedsim.config.medmnist import REFUSED
from fedsim.config.medmnist import file_name as medmnist_file
from fedsim.errors import DataError
from fedsim.plugins import is_import_path, resolve
from fedsim.settings import Range, section_from_dict

DOMAINS: tuple[str, ...] = ("human", "animal", "phantom", "simulation")
# Foundation label = the vessel-tree / access-route pattern the devices follow.
CLASS_NAMES: tuple[str, ...] = ("straight", "left-arch", "right-arch", "bifurcation", "tortuous", "radial")
TUBE_NAMES: tuple[str, ...] = ("normal", "borderline", "abnormal")
SEG_NAMES: tuple[str, ...] = ("background", "catheter", "guidewire")
NUM_SEG_CLASSES = len(SEG_NAMES)  # the classes of a segmentation mask
NUM_CLASSES = len(CLASS_NAMES)
DOMAIN_SHORT = {"human": "human", "animal": "animal", "phantom": "phantom", "simulation": "sim"}

PARTITIONS = ("domain", "iid", "dirichlet", "quantity", "attribute", "natural")
KINDS = ("synthetic", "folder", "torchvision", "python", "medmnist")
LABELS = ("route", "source")  # what the synthetic foundation label is (DataConfig.label)


@dataclass
class DataConfig:
    """The experiment YAML ``data:`` section: where the silos' data come from and how they are split.

    kind: "synthetic" (generated), "folder" (``root/<silo>/images/* + labels.csv``, ``masks/``
    for segmentation), "torchvision" (``torchvision.datasets.<name>`` read from ``root``),
    "python" (a plug-in ``factory(num_silos=N, seed=S, **args) -> (train_sets, test_set[, centers])``)
    or "medmnist" (MedMNIST's ``root/{flag}[_{size}].npz``, its train / val / test splits).
    partition: "domain" (per-silo domain mixtures; FedEFM-style default cycle when ``domains`` is
    None; folder data: the silo folders as they are; data without domains: iid), "iid",
    "dirichlet" (label skew, ``dirichlet_alpha``), "quantity" (size skew, ``quantity_skew``,
    default 1.0 when 0), "attribute" (age-like skew, ``attribute_skew``, default 1.0 when 0),
    "natural" (each sample's own centre: ``train_centers`` in a MedMNIST-style file, the
    ``centers`` a python factory returns; silo i is centre i).
    ``unseen_fraction``, ``label_noise``, ``quantity_skew`` and ``attribute_skew`` also combine
    with any partition.
    label (synthetic data): "route" (the vessel-route shape, 6 classes independent of the domain) or
    "source" (the image's domain, the data source; the classes are the domains in use, see
    :func:`source_mixtures`, which says what "unseen" then means).
    """

    kind: str = "synthetic"  # synthetic (generated X-rays) | folder (root/<silo>/...) | torchvision | python (a plug-in)
    #                          | medmnist (root/{flag}[_{size}].npz, MedMNIST's official splits)
    root: str | None = None          # folder data / torchvision root / the folder holding MedMNIST's .npz files
    label: Literal[LABELS] = "route"  # synthetic foundation label: route (vessel shape, 6 classes) | source
    #                                   (the image's domain; classes = the domains some silo's mixture holds)
    image_size: Annotated[int, Range(ge=16)] = 64  # synthetic and folder data (torchvision, python: their own size; medmnist: data.size)
    channels: int | None = None      # 1 grayscale | 3 RGB | None: the data's own (synthetic: 1)
    classes: list | None = None      # class names (folder data; python data: their number); None: from the data
    samples_per_silo: Annotated[int, Range(ge=1)] = 256  # synthetic: training images per silo on average (quantity skew moves them)
    test_samples: Annotated[int, Range(ge=1)] = 512  # synthetic: test images, balanced over every domain and class
    partition: Literal[PARTITIONS] = "domain"  # how data is split over silos: domain mixtures | iid | dirichlet
    #                                label skew | quantity (size) skew | attribute (age-like) skew | natural (each
    #                                sample's centre: train_centers in a MedMNIST-style file, a python factory's centers)
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
    flag: str | None = None          # kind medmnist: the dataset, e.g. pathmnist, bloodmnist, organamnist, dermamnist
    size: Literal[28, 64, 128, 224] = 28  # kind medmnist: the image side of the file ({flag}.npz at 28, else {flag}_{size}.npz)
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
            check_torchvision(self)
        if self.kind == "medmnist":
            self._check_medmnist()
        elif self.partition == "natural" and self.kind not in ("python",):
            raise DataError(f"data.partition: natural splits by each sample's centre, which data.kind {self.kind} "
                            "does not carry; use data.kind medmnist (train_centers in the .npz) or python (a factory "
                            "returning centers)")
        if self.kind == "python":
            if not is_import_path(self.factory):
                raise DataError(f"data.kind is 'python' but data.factory is {self.factory!r}; set it to "
                                "'package.module:function' returning (train_sets, test_set)")
            resolve(self.factory, "data.factory", DataError)

    def _check_medmnist(self) -> None:
        """The flag is a 2-D single-label MedMNIST dataset, the size one MedMNIST publishes, the
        root a folder (the file itself is read, and its absence reported, when the data load)."""
        if self.flag in REFUSED:
            raise DataError(f"data.flag {self.flag}: {REFUSED[self.flag]}; choose one of {', '.join(MEDMNIST_FLAGS)}")
        if self.flag not in MEDMNIST_FLAGS:
            raise DataError(f"data.kind is 'medmnist' but data.flag is {self.flag!r}; choose one of "
                            f"{', '.join(MEDMNIST_FLAGS)}")
        if not self.root:
            raise DataError(f"data.kind is 'medmnist' but data.root is not set: the folder holding "
                            f"{medmnist_file(self.flag, self.size)} (MedMNIST publishes it at {MEDMNIST_RECORD})")
        if self.validation_fraction:
            raise DataError("data.kind medmnist keeps MedMNIST's own validation split (each silo's share of it): "
                            "leave data.validation_fraction at 0")
        if self.partition == "attribute":
            raise DataError("data.partition attribute needs a per-sample attribute, which MedMNIST does not carry; "
                            "choose iid, dirichlet, quantity or natural")
        if self.domains is not None:
            raise DataError("data.domains mixes the synthetic X-rays' domains, which MedMNIST does not carry: set "
                            "data.domains: null (and data.partition iid, dirichlet, quantity or natural)")

    @property
    def known_image_size(self) -> int | None:
        """The side of the run's images when the config fixes it (synthetic and folder data:
        ``image_size``; MedMNIST: ``size``), else None (torchvision and python data keep their own)."""
        if self.kind == "medmnist":
            return int(self.size)
        return int(self.image_size) if self.kind in ("synthetic", "folder") else None

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


def torchvision_class(name: str | None):
    """The ``torchvision.datasets`` class ``data.name`` names (torchvision imported only for
    ``data.kind: torchvision``)."""
    import torchvision.datasets as tvd

    if not name:
        raise DataError("data.kind is 'torchvision' but data.name is not set (e.g. MNIST, FashionMNIST, CIFAR10)")
    cls = getattr(tvd, name, None)
    if not isinstance(cls, type):
        known = ", ".join(n for n in ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "CIFAR10", "CIFAR100", "SVHN"))
        raise DataError(f"data.name {name!r} is not a torchvision.datasets class (e.g. {known})")
    return cls


def check_torchvision(cfg: DataConfig) -> None:
    """What can be checked without reading the files: the class exists, the root is set and is a
    folder (or will be created, with ``data.download: true``)."""
    torchvision_class(cfg.name)
    if not cfg.root:
        raise DataError(f"data.kind is 'torchvision' but data.root is not set: the folder holding {cfg.name} "
                        "(or set data.download: true and a root to fetch it into)")
    root = Path(cfg.root).expanduser()
    if not cfg.download and not root.is_dir():
        raise DataError(f"data.root {root} does not exist; put {cfg.name} there in torchvision's layout or set "
                        "data.download: true to fetch it")
