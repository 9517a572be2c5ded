"""A PNG grid of generated images per domain, with catheter/guidewire masks overlaid."""

from __future__ import annotations

from pathlib import Path

import torch

from fedsim.config.data import CLASS_NAMES, DOMAINS, TUBE_NAMES

from .dataset import SiloDataset
from .synthetic import derive_seed, generate

CATHETER_RGB = (1.0, 0.25, 0.1)   # orange-red
GUIDEWIRE_RGB = (0.1, 0.9, 1.0)   # cyan


def overlay(image: torch.Tensor, mask: torch.Tensor, alpha: float = 0.7) -> torch.Tensor:
    """(H, W, 3) RGB: grayscale ``image`` (1, H, W) with mask 1/2 tinted catheter/guidewire."""
    rgb = image[0].clamp(0, 1)[..., None].repeat(1, 1, 3)
    for cls, col in ((1, CATHETER_RGB), (2, GUIDEWIRE_RGB)):
        m = (mask == cls)[..., None]
        rgb = torch.where(m, (1 - alpha) * rgb + alpha * torch.tensor(col), rgb)
    return rgb


def preview_samples(domains=None, size: int = 64, per_domain: int = 6, seed: int = 0) -> list[SiloDataset]:
    """``per_domain`` images for each domain; foundation labels cycle through the 6 classes and
    tube labels through normal/borderline/abnormal, so a row shows every pattern."""
    domains = list(domains or DOMAINS)
    k = torch.arange(per_domain)
    return [generate(per_domain, domains=d, image_size=size, seed=derive_seed(seed, 7, i), labels=k % len(CLASS_NAMES),
                     tube=(k // 2) % len(TUBE_NAMES), name=d) for i, d in enumerate(domains)]


def save_preview(out: str | Path, domains=None, size: int = 64, per_domain: int = 6, seed: int = 0,
                 masks: bool = True) -> Path:
    """Write the grid to ``out``: per domain a row of raw images and (``masks``) a row with the
    masks overlaid (catheter orange-red, guidewire cyan). Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sets = preview_samples(domains, size, per_domain, seed)
    rows_per = 2 if masks else 1
    nrows = rows_per * len(sets)
    fig, axes = plt.subplots(nrows, per_domain, figsize=(1.7 * per_domain, 1.8 * nrows), squeeze=False)
    for r, ds in enumerate(sets):
        for c in range(per_domain):
            ax = axes[rows_per * r][c]
            ax.imshow(ds.images[c, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{CLASS_NAMES[int(ds.labels[c])]} / {TUBE_NAMES[int(ds.tube[c])]}", fontsize=7)
            if masks:
                ax2 = axes[rows_per * r + 1][c]
                ax2.imshow(overlay(ds.images[c], ds.masks[c]).numpy(), interpolation="nearest")
                ax2.set_xticks([])
                ax2.set_yticks([])
            ax.set_xticks([])
            ax.set_yticks([])
        axes[rows_per * r][0].set_ylabel(ds.name, fontsize=10, fontweight="bold")
        if masks:
            axes[rows_per * r + 1][0].set_ylabel(f"{ds.name}\n+ masks", fontsize=8)
    fig.suptitle(f"fedsim synthetic endovascular X-ray ({size}x{size}, seed {seed})\n"
                 "access-route class / tube position; catheter orange, guidewire cyan", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
