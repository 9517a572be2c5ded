"""The ``fminit:`` section: where federated training begins (:mod:`fedsim.fminit`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fedsim.config.models import ModelConfig
from fedsim.settings import Range


def _teacher_model_config() -> ModelConfig:
    return ModelConfig(name="r50-vit")


@dataclass
class FMInitConfig:
    """Where federated training begins (Li and Yang's ``init: pretrained | fm``). ``pretrained``: the
    student U-Net (``model``) trained on the proxy set D^P with the segmentation loss; ``fm``: a
    larger teacher U-Net (``teacher``, trained on its own larger public set: our stand-in for
    SAM-Med2D) distilled into the student on D^P with L = α·KL(σ(z_T) ‖ σ(z_S)) per pixel +
    (1 − α)·Dice loss. D^P and the teacher's set come from their own seed streams, disjoint from
    every silo and the test set. Results are cached under ``cache_dir`` keyed by these settings."""

    alpha: Annotated[float, Range(ge=0, le=1)] = 0.6  # α of eq. 5 (the paper's)
    temperature: Annotated[float, Range(gt=0)] = 1.0  # T of the per-pixel softmax in the KL term
    proxy_samples: Annotated[int, Range(ge=1)] = 256  # |D^P|, images in the proxy set
    student_steps: Annotated[int, Range(ge=1)] = 120  # Adam steps on D^P, the same for pretrained and fm
    teacher: Any = field(default_factory=_teacher_model_config)  # the teacher U-Net's encoder
    teacher_samples: Annotated[int, Range(ge=1)] = 1024  # the teacher's own (larger) training set
    teacher_steps: Annotated[int, Range(ge=1)] = 200  # Adam steps training the teacher on its own set
    batch_size: Annotated[int, Range(ge=1)] = 16  # images per step, for teacher, pre-training and distillation
    lr: Annotated[float, Range(gt=0)] = 2e-3  # Adam, for teacher, pre-training and distillation
    cache_dir: str | None = None  # where the trained initial models are cached; None: OUTPUT_DIR/_init_cache

    def validate(self) -> None:
        if hasattr(self.teacher, "validate"):
            self.teacher.validate()
