"""The ``downstream:`` section: fine-tuning from Θ on a generated set (:mod:`fedsim.downstream`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fedsim.config.data import DOMAINS
from fedsim.errors import ConfigError
from fedsim.settings import Range, section_from_dict

TASKS = ("segmentation", "classification")


@dataclass
class DownstreamConfig:
    """The ``downstream:`` settings: fine-tuning from Θ (or random weights) on a generated set.
    ``seed`` draws the downstream images; ``seeds`` are the fine-tune seeds (decoder/head
    initialisation and batch order), every row is their mean ± std.

    Segmentation recipe (chosen on the validation split, docs/downstream.md): 16 training images,
    decoder warm-up on the frozen encoder, then the whole U-Net with the encoder at a tenth of the
    decoder's learning rate, no raw-pixel branch in the decoder, segmentation images at 96x96.
    Cost with the default model on one CPU thread: ~24 s per segmentation fine-tune at 96x96 (~11 s
    at 64x64; the decoder's full-resolution convolutions are most of a step), ~1.5-3 s per
    classification fine-tune, so ~80 s of CPU per initialization for 3 seeds and both tasks,
    spread over ``workers`` processes."""

    enabled: bool = True  # fedsim run: fine-tune from random weights and from each run's Θ after training
    domain: str | None = "human"   # downstream domain; None = all four domains, cycled
    train_samples: Annotated[int, Range(ge=1)] = 256  # generated training images (classification uses all)
    test_samples: Annotated[int, Range(ge=1)] = 256  # generated test images, scored for both tasks
    seed: Annotated[int, Range(ge=0)] = 0   # the downstream images (fedsim run: the experiment seed)
    seeds: list = field(default_factory=lambda: [0, 1, 2])  # fine-tune seeds: rows are mean ± std over them
    tasks: list = field(default_factory=lambda: list(TASKS))  # which of segmentation, classification to run
    # tube-position classification: the whole network from the start
    steps: Annotated[int, Range(ge=0)] = 60   # classification: optimizer steps (when epochs == 0)
    epochs: Annotated[int, Range(ge=0)] = 0   # classification: > 0: this many passes over train_samples instead of `steps`
    batch_size: Annotated[int, Range(ge=1)] = 16  # classification: images per step
    lr: Annotated[float, Range(gt=0)] = 2e-3  # classification: learning rate (Adam)
    # segmentation: few-shot U-Net, decoder warm-up on the frozen encoder, then everything
    seg_train_samples: Annotated[int, Range(ge=1)] = 16  # segmentation trains on the first N training images
    seg_batch_size: Annotated[int, Range(ge=1)] = 8  # images per segmentation step
    seg_warmup_steps: Annotated[int, Range(ge=0)] = 150  # warm-up steps: decoder only, encoder frozen
    seg_steps: Annotated[int, Range(ge=0)] = 150         # steps after the warm-up: then the whole U-Net
    seg_lr: Annotated[float, Range(gt=0)] = 1e-2         # learning rate of the decoder (Adam)
    seg_encoder_lr: Annotated[float, Range(ge=0)] = 1e-3  # encoder after the warm-up; 0 = frozen throughout
    seg_raw_branch: bool = False   # the decoder's full-resolution conv on the input pixels (UNet)
    # learning-rate schedule over the whole segmentation fine-tune (warm-up + steps): constant, or
    # cosine from each group's rate to 0 at the last step (the encoder's group joins on that curve)
    seg_schedule: Literal["constant", "cosine"] = "constant"
    # the segmentation images' size; null = the run's data.image_size (the foundation's, which the
    # classification task always uses). 96, not the default run's 64: at 64x64 the guidewire is a
    # 1-pixel line of ~12 pixels an image, where a foundation gains 3 Dice points against a
    # seed-to-seed spread of 5-7; at 96x96 it is 3 pixels wide and Θ gains 12 (validation split,
    # docs/downstream.md)
    seg_image_size: Annotated[int, Range(ge=16)] | None = 96
    # fine-tunes run in this many processes, one CPU thread each (0 = one per usable core, at most
    # one per fine-tune); the scores are the same for any number (every fine-tune is single-threaded)
    workers: Annotated[int, Range(ge=0)] = 0

    @classmethod
    def from_dict(cls, d: dict | None) -> DownstreamConfig:
        return section_from_dict(cls, d, "downstream", ConfigError)

    def validate(self) -> None:
        if self.domain is not None and self.domain not in DOMAINS:
            raise ConfigError(f"downstream.domain must be one of {', '.join(DOMAINS)} (or null for all), "
                              f"got {self.domain!r}")
        for key, lo in (("train_samples", 1), ("test_samples", 1), ("batch_size", 1), ("steps", 0),
                        ("epochs", 0), ("seg_train_samples", 1), ("seg_batch_size", 1), ("seg_warmup_steps", 0),
                        ("seg_steps", 0), ("seed", 0), ("workers", 0)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"downstream.{key} must be an integer >= {lo}, got {v!r}")
        for key in ("lr", "seg_lr"):
            if not isinstance(getattr(self, key), (int, float)) or not getattr(self, key) > 0:
                raise ConfigError(f"downstream.{key} must be > 0, got {getattr(self, key)!r}")
        if not isinstance(self.seg_encoder_lr, (int, float)) or self.seg_encoder_lr < 0:
            raise ConfigError(f"downstream.seg_encoder_lr must be >= 0 (0 = frozen encoder), got {self.seg_encoder_lr!r}")
        if self.seg_train_samples > self.train_samples:
            raise ConfigError(f"downstream.seg_train_samples ({self.seg_train_samples}) must not exceed "
                              f"downstream.train_samples ({self.train_samples}): they are its first images")
        seeds = self.seeds if isinstance(self.seeds, list) else None
        if (not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds)
                or len(set(seeds)) != len(seeds)):
            raise ConfigError(f"downstream.seeds must be a non-empty list of distinct integers >= 0, got {self.seeds!r}")
        size = self.seg_image_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 16):
            raise ConfigError(f"downstream.seg_image_size must be an integer >= 16 (or null: the run's), got {size!r}")
        if self.seg_schedule not in ("constant", "cosine"):
            raise ConfigError(f"downstream.seg_schedule must be constant or cosine, got {self.seg_schedule!r}")
        tasks = list(self.tasks or [])
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise ConfigError(f"downstream.tasks must be a non-empty list from {', '.join(TASKS)}, got {self.tasks!r}")

    def num_steps(self) -> int:
        """Classification steps."""
        if self.epochs > 0:
            return self.epochs * math.ceil(self.train_samples / self.batch_size)
        return self.steps
