"""Seeded partitioners: how samples, domains and labels are spread over silos.

Two families:

* *plan* helpers used by the synthetic generator, which decides per silo how many samples of each
  domain and class to draw (exact shares, no pool needed): :func:`quantity_sizes`,
  :func:`silo_mixtures`, :func:`seen_classes`, :func:`class_proportions`, :func:`attribute_values`;
* *index* partitioners over an existing pool (folder data, or any labelled tensor), each returning
  one ``LongTensor`` of indices per silo: :func:`split_iid`, :func:`split_dirichlet`,
  :func:`split_quantity`, :func:`split_attribute`, :func:`split_domain`, :func:`restrict_unseen`.

:func:`symmetric_label_noise` flips labels; :func:`partition_table` prints any split.
Everything takes a ``torch.Generator`` so that a (config, num_silos, seed) triple fixes the result.
"""

from __future__ import annotations

import math

import torch
from rich import box
from rich.table import Table
from torch import Tensor

from fedsim.config.data import DOMAIN_SHORT, DOMAINS, NUM_CLASSES, DataConfig
from fedsim.errors import DataError

# FedEFM-style "unseen data" default: every silo sees a different domain mixture.
DEFAULT_MIXTURES: list[dict[str, float]] = [
    {"human": 0.74, "animal": 0.26},
    {"animal": 0.5, "simulation": 0.5},
    {"phantom": 1.0},
    {"simulation": 0.7, "human": 0.3},
]


def largest_remainder(weights, total: int) -> list[int]:
    """Integer counts summing to ``total`` proportional to ``weights`` (Hamilton's method;
    ties go to the earlier entry). Every count is within 1 of its exact share."""
    w = [float(x) for x in weights]
    if total < 0 or not w or any(x < 0 or not math.isfinite(x) for x in w) or sum(w) <= 0:
        raise DataError(f"cannot split {total} samples by weights {list(weights)}: weights must be "
                        "non-negative numbers with a positive sum")
    s = sum(w)
    exact = [x / s * total for x in w]
    counts = [int(math.floor(e)) for e in exact]
    rest = total - sum(counts)
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


def quantity_sizes(num_silos: int, per_silo: int, skew: float, g: torch.Generator) -> list[int]:
    """Silo sizes summing to ``num_silos * per_silo``; size ∝ (rank+1)^-skew over a random
    ranking of silos (skew 0 = equal sizes, 1 = Zipf-like). Every silo keeps at least 1 sample."""
    if skew < 0:
        raise DataError(f"data.quantity_skew must be >= 0, got {skew}")
    total = num_silos * per_silo
    rank = torch.randperm(num_silos, generator=g).tolist()
    weights = [(r + 1.0) ** (-skew) for r in rank]
    sizes = largest_remainder(weights, total - num_silos)
    return [s + 1 for s in sizes]


def _norm_mixture(m, where: str) -> dict[str, float]:
    if isinstance(m, str):
        m = {m: 1.0}
    elif isinstance(m, (list, tuple)):
        m = {k: 1.0 for k in m}
    if not isinstance(m, dict) or not m:
        raise DataError(f"{where}: a domain mixture must be a name, a list of names or a "
                        f"{{name: weight}} mapping, got {m!r}")
    out = {}
    for k, v in m.items():
        if k not in DOMAINS:
            raise DataError(f"{where}: unknown domain {k!r}; choose from {', '.join(DOMAINS)}")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise DataError(f"{where}: weight of {k!r} must be a number, got {v!r}") from None
        if v < 0 or not math.isfinite(v):
            raise DataError(f"{where}: weight of {k!r} must be >= 0, got {v}")
        out[k] = v
    if sum(out.values()) <= 0:
        raise DataError(f"{where}: the domain weights sum to 0")
    return out


def silo_mixtures(domains, partition: str, num_silos: int) -> list[dict[str, float]]:
    """Per-silo domain mixtures: ``domains`` cycled over the silos, or the default — FedEFM-style
    :data:`DEFAULT_MIXTURES` for ``partition="domain"``, all four domains equally otherwise."""
    if domains is None:
        base = DEFAULT_MIXTURES if partition == "domain" else [{d: 1.0 for d in DOMAINS}]
    else:
        if isinstance(domains, (str, dict)):
            domains = [domains]
        if not isinstance(domains, (list, tuple)) or not domains:
            raise DataError(f"data.domains must be a list of per-silo mixtures, got {domains!r}")
        base = [_norm_mixture(m, f"data.domains[{i}]") for i, m in enumerate(domains)]
    return [dict(base[i % len(base)]) for i in range(num_silos)]


def seen_classes(num_silos: int, num_classes: int, unseen_fraction: float, g: torch.Generator) -> list[list[int]]:
    """Classes each silo sees. Classes are dealt round-robin into disjoint "home" sets (silo i owns
    classes c with c % num_silos == i; with more silos than classes silo i owns class i % C); each
    silo also sees round((1 - f) * (#non-home classes)) random other classes. f = 0: every class;
    f = 1: only the home classes, so with num_silos <= num_classes no two silos share a class."""
    if not 0.0 <= unseen_fraction <= 1.0:
        raise DataError(f"data.unseen_fraction must be in [0, 1], got {unseen_fraction}")
    out = []
    for i in range(num_silos):
        home = [c for c in range(num_classes) if c % num_silos == i] if num_silos <= num_classes else [i % num_classes]
        others = [c for c in range(num_classes) if c not in home]
        k = int(round((1.0 - unseen_fraction) * len(others)))
        perm = torch.randperm(len(others), generator=g).tolist()
        out.append(sorted(home + [others[j] for j in perm[:k]]))
    return out


def class_proportions(seen: list[list[int]], num_classes: int, alpha: float | None,
                      g: torch.Generator) -> Tensor:
    """(num_silos, num_classes) label distribution per silo over its seen classes: uniform when
    ``alpha`` is None, else Dirichlet(alpha) (alpha -> inf approaches uniform)."""
    p = torch.zeros(len(seen), num_classes, dtype=torch.float64)
    for i, cls in enumerate(seen):
        if alpha is None:
            p[i, cls] = 1.0 / len(cls)
        else:
            p[i, cls] = dirichlet([alpha] * len(cls), g)
    return p


def dirichlet(alpha: list[float], g: torch.Generator) -> Tensor:
    """A Dirichlet sample drawn with ``g`` (torch.distributions cannot take a generator).
    Gamma(a) by Marsaglia-Tsang with the a<1 boost; float64."""
    out = []
    for a in alpha:
        if not a > 0:
            raise DataError(f"data.dirichlet_alpha must be > 0, got {a}")
        boost = a < 1.0
        aa = a + 1.0 if boost else a
        d = aa - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)
        while True:
            x = float(torch.randn(1, generator=g, dtype=torch.float64))
            v = (1.0 + c * x) ** 3
            if v <= 0:
                continue
            u = float(torch.rand(1, generator=g, dtype=torch.float64))
            if math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
                val = d * v
                break
        if boost:
            u = float(torch.rand(1, generator=g, dtype=torch.float64))
            val *= max(u, 1e-300) ** (1.0 / a)
        out.append(val)
    t = torch.tensor(out, dtype=torch.float64)
    if t.sum() <= 0:  # tiny alpha underflow: put all mass on one random entry
        t = torch.zeros(len(alpha), dtype=torch.float64)
        t[int(torch.randint(len(alpha), (1,), generator=g))] = 1.0
    return t / t.sum()


def attribute_values(n: int, silo: int, num_silos: int, strength: float, g: torch.Generator) -> Tensor:
    """Age-like attribute in (0, 1). strength 0: uniform for every silo. strength s > 0: centred
    on (silo + 0.5) / num_silos in logit space with spread 1/s (larger s = stronger skew)."""
    if strength < 0:
        raise DataError(f"data.attribute_skew must be >= 0, got {strength}")
    if strength == 0:
        return torch.rand(n, generator=g)
    c = (silo + 0.5) / num_silos
    z = torch.randn(n, generator=g)
    return torch.sigmoid(math.log(c / (1.0 - c)) + z / strength).float()


def symmetric_label_noise(labels: Tensor, mu: float, num_classes: int, g: torch.Generator) -> Tensor:
    """With probability ``mu`` replace each label by a uniformly chosen *different* class."""
    if not 0.0 <= mu <= 1.0:
        raise DataError(f"data.label_noise must be in [0, 1], got {mu}")
    flip = torch.rand(labels.shape[0], generator=g) < mu
    shift = torch.randint(1, num_classes, (labels.shape[0],), generator=g)
    return torch.where(flip, (labels + shift) % num_classes, labels)


# ---- index partitioners over a pool ---------------------------------------------------------------

def split_iid(n: int, num_silos: int, g: torch.Generator) -> list[Tensor]:
    perm = torch.randperm(n, generator=g)
    sizes = largest_remainder([1.0] * num_silos, n)
    return [p.sort().values for p in torch.split(perm, sizes)]


def split_quantity(n: int, num_silos: int, skew: float, g: torch.Generator) -> list[Tensor]:
    perm = torch.randperm(n, generator=g)
    if n < num_silos:
        raise DataError(f"cannot split {n} samples over {num_silos} silos")
    rank = torch.randperm(num_silos, generator=g).tolist()
    sizes = [s + 1 for s in largest_remainder([(r + 1.0) ** (-skew) for r in rank], n - num_silos)]
    return [p.sort().values for p in torch.split(perm, sizes)]


def split_dirichlet(labels: Tensor, num_silos: int, alpha: float, g: torch.Generator,
                    num_classes: int | None = None) -> list[Tensor]:
    """Classic label-skew split: the samples of each class c go to silos in proportions
    q_c ~ Dirichlet(alpha * 1); alpha -> inf gives the same class mix everywhere."""
    num_classes = num_classes or int(labels.max()) + 1
    parts: list[list[Tensor]] = [[] for _ in range(num_silos)]
    for c in range(num_classes):
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        q = dirichlet([alpha] * num_silos, g)
        for i, chunk in enumerate(torch.split(idx, largest_remainder(q.tolist(), idx.numel()))):
            parts[i].append(chunk)
    return [torch.cat(p).sort().values for p in parts]


def split_attribute(attr: Tensor, num_silos: int, strength: float, g: torch.Generator) -> list[Tensor]:
    """Sort by attribute + noise (noise std 1/strength on the rank scale) and cut into equal
    contiguous chunks: silo 0 gets the lowest ("youngest") samples. strength 0 = iid."""
    n = attr.numel()
    if strength <= 0:
        return split_iid(n, num_silos, g)
    r = attr.argsort().argsort().double() / max(n - 1, 1)
    key = r + torch.randn(n, generator=g, dtype=torch.float64) / (strength * 4.0)
    order = key.argsort()
    return [p.sort().values for p in torch.split(order, largest_remainder([1.0] * num_silos, n))]


def split_domain(domain: Tensor, mixtures: list[dict[str, float]], sizes: list[int],
                 g: torch.Generator) -> list[Tensor]:
    """Draw, without replacement, exactly largest_remainder(mixture, size) samples of each domain
    for every silo. Raises DataError when the pool has too few samples of a domain."""
    pools = {}
    for d in range(len(DOMAINS)):
        idx = (domain == d).nonzero().squeeze(1)
        pools[d] = idx[torch.randperm(idx.numel(), generator=g)].tolist()
    out = []
    for i, (mix, n) in enumerate(zip(mixtures, sizes)):
        names = list(mix)
        chosen = []
        for name, c in zip(names, largest_remainder([mix[k] for k in names], n)):
            d = DOMAINS.index(name)
            if len(pools[d]) < c:
                raise DataError(f"silo {i} needs {c} {name} samples but only {len(pools[d])} are left")
            chosen += pools[d][:c]
            pools[d] = pools[d][c:]
        out.append(torch.tensor(sorted(chosen), dtype=torch.long))
    return out


def restrict_unseen(labels: Tensor, parts: list[Tensor], seen: list[list[int]]) -> list[Tensor]:
    """Drop from each silo the samples whose class that silo must not see."""
    out = []
    for p, cls in zip(parts, seen):
        keep = torch.isin(labels[p], torch.tensor(cls, dtype=labels.dtype))
        out.append(p[keep])
    return out


def partition_table(labels: Tensor, domain: Tensor, parts: list[Tensor], title: str = "Partition"):
    """A rich table of per-silo counts per domain and class for an index split."""
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for col in ["silo", "n", *[DOMAIN_SHORT[d] for d in DOMAINS], *[f"c{c}" for c in range(NUM_CLASSES)]]:
        t.add_column(col, justify="right", min_width=len(col), no_wrap=True)
    for i, p in enumerate(parts):
        dc = torch.bincount(domain[p], minlength=len(DOMAINS)).tolist()
        cc = torch.bincount(labels[p], minlength=NUM_CLASSES).tolist()
        t.add_row(str(i), str(p.numel()), *[str(v) if v else "·" for v in dc + cc])
    return t


def skews(cfg: DataConfig) -> tuple[float, float]:
    """(quantity skew, attribute skew) of ``cfg``: 1 for the partition that names one and leaves it 0."""
    q = cfg.quantity_skew or (1.0 if cfg.partition == "quantity" else 0.0)
    a = cfg.attribute_skew or (1.0 if cfg.partition == "attribute" else 0.0)
    return float(q), float(a)


def split_pool(cfg: DataConfig, num_silos: int, num_classes: int, labels: Tensor, domain: Tensor | None,
               attribute: Tensor | None, g: torch.Generator, source: str) -> list[Tensor]:
    """Indices of each silo's share of a pooled dataset under ``cfg.partition`` (then without the
    classes each silo must not see, ``cfg.unseen_fraction``). Data without domains split iid under
    the default ``partition: domain``; an explicit domain mixture or an attribute skew needs
    domains / attributes, and their absence is an error naming ``source``."""
    n = labels.numel()
    qskew, askew = skews(cfg)
    if n < num_silos:
        raise DataError(f"{source}: {n} training samples cannot fill {num_silos} silos")
    if cfg.partition == "dirichlet":
        parts = split_dirichlet(labels, num_silos, float(cfg.dirichlet_alpha), g, num_classes)
    elif cfg.partition == "quantity":
        parts = split_quantity(n, num_silos, qskew, g)
    elif cfg.partition == "attribute":
        if attribute is None or not attribute.any():
            raise DataError(f"{source}: data.partition attribute needs a per-sample attribute, which this data "
                            "lacks; choose iid, dirichlet or quantity")
        parts = split_attribute(attribute, num_silos, askew, g)
    elif cfg.partition == "domain" and domain is not None:
        mix = silo_mixtures(cfg.domains, "domain", num_silos)
        parts = split_domain(domain, mix, largest_remainder([1.0] * num_silos, n), g)
    elif cfg.partition == "domain" and cfg.domains is not None:
        raise DataError(f"{source}: data.domains mixes domains, but this data has none; remove data.domains "
                        "or choose data.partition iid, dirichlet or quantity")
    else:
        parts = split_iid(n, num_silos, g)
    if cfg.unseen_fraction > 0:
        seen = seen_classes(num_silos, num_classes, float(cfg.unseen_fraction), g)
        parts = restrict_unseen(labels, parts, seen)
    return parts
