"""The downstream sets: generated images of one domain, their own seed streams, a test split or a
validation split held out of the training images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from fedsim.config.downstream import TASKS, DownstreamConfig
from fedsim.data import DOMAINS, derive_seed, generate
from fedsim.errors import ConfigError

SPLITS = ("test", "val")


@dataclass
class DownstreamData:
    train: Any   # SiloDataset
    test: Any    # SiloDataset (split "val": the held-out quarter of the generated training images)
    split: Literal["test", "val"] = "test"


def downstream_config(ds_cfg) -> DownstreamConfig:
    """The ``downstream:`` settings from a config, its dict or None (the defaults), checked."""
    if ds_cfg is None:
        ds_cfg = DownstreamConfig()
    elif isinstance(ds_cfg, dict):
        ds_cfg = DownstreamConfig.from_dict(ds_cfg)
    ds_cfg.validate()
    return ds_cfg


def image_size_of(data_cfg_or_image_size) -> int:
    """The run's image size from a data config, its dict, an int, or None (64)."""
    if data_cfg_or_image_size is None:
        return 64
    if isinstance(data_cfg_or_image_size, int):
        return int(data_cfg_or_image_size)
    if isinstance(data_cfg_or_image_size, dict):
        return int(data_cfg_or_image_size.get("image_size", 64))
    return int(data_cfg_or_image_size.image_size)


def image_sizes(ds_cfg: DownstreamConfig, image_size: int) -> dict[str, int]:
    """The image size of each configured task: segmentation at ``seg_image_size`` (when set),
    classification at the run's ``image_size``."""
    sizes = {"segmentation": int(ds_cfg.seg_image_size or image_size), "classification": int(image_size)}
    return {t: sizes[t] for t in TASKS if t in ds_cfg.tasks}


def make_downstream_data(ds_cfg: DownstreamConfig, image_size: int, seed: int, split: str = "test",
                         task: str = "segmentation") -> DownstreamData:
    """The downstream train/test sets: generated from their own seed streams (0xD5, 1/2), so they
    never coincide with a federated run's silo or test images of the same seed.

    ``split="val"``: the evaluation set is the last quarter of the generated *training* images
    and the model trains on the rest (the test images are not even generated), for choosing a
    fine-tuning recipe without looking at the test set. ``task="segmentation"`` renders the
    scenes at ``ds_cfg.seg_image_size`` when set (the same scenes: sizes share the seed), else at
    ``image_size`` (the run's)."""
    if task == "segmentation":
        image_size = int(ds_cfg.seg_image_size or image_size)
    if split not in SPLITS:
        raise ConfigError(f"downstream split must be one of {', '.join(SPLITS)}, got {split!r}")
    domains = ds_cfg.domain if ds_cfg.domain is not None else list(DOMAINS)
    train = generate(ds_cfg.train_samples, domains=domains, image_size=image_size,
                     seed=derive_seed(seed, 0xD5, 1), name="downstream-train")
    if split == "val":
        n_val = ds_cfg.train_samples // 4
        kept = ds_cfg.train_samples - n_val
        if n_val < 1 or ds_cfg.seg_train_samples > kept:
            raise ConfigError(f"split 'val' holds out a quarter of downstream.train_samples ({ds_cfg.train_samples}): "
                              f"too few to keep {ds_cfg.seg_train_samples} segmentation training images and a "
                              "validation set; raise train_samples")
        return DownstreamData(train.subset(torch.arange(kept)), train.subset(torch.arange(kept, ds_cfg.train_samples)),
                              "val")
    test = generate(ds_cfg.test_samples, domains=domains, image_size=image_size,
                    seed=derive_seed(seed, 0xD5, 2), name="downstream-test")
    return DownstreamData(train, test)
