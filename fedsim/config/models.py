"""The ``model:`` section (and the teacher's, ``fminit.teacher``): which network the silos train."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

from fedsim.errors import ConfigError
from fedsim.plugins import is_import_path, resolve
from fedsim.settings import Range, section_from_dict

MODEL_NAMES = ("cnn", "resnet10", "resnet12", "resnet18", "resnet50", "r50-vit", "shufflenet", "mobilenetv2")
MONAI_PREFIX = "monai."  # model.name: monai.NAME is monai.networks.nets.NAME (fedsim.models.monai_nets)


def is_monai_name(name) -> bool:
    """Whether ``name`` names a MONAI network (``monai.DenseNet121``, ``monai.BasicUNet``, …)."""
    return isinstance(name, str) and name.startswith(MONAI_PREFIX) and name[len(MONAI_PREFIX):].isidentifier()


@dataclass
class ModelConfig:
    """A network: the experiment YAML ``model:`` section (and the teacher's, ``fminit.teacher``)."""

    name: str = "cnn"         # a built-in name, a MONAI network "monai.NAME" (e.g. monai.DenseNet121), or a plug-in "package.module:factory"
    args: dict = field(default_factory=dict)  # plug-in / MONAI network: its keyword arguments
    features_layer: str | None = None  # plug-in / MONAI network: submodule whose output is the dense feature map
    width: Annotated[int, Range(ge=4)] = 16  # base channels for "cnn" and "r50-vit"
    norm: Literal["group", "batch"] = "group"  # GroupNorm or BatchNorm in cnn, resnets, mobilenetv2, r50-vit
    norm_groups: Annotated[int, Range(ge=0)] = 0  # GroupNorm groups; 0 = one channel per group (fastest to train here)
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0  # before the classifier of "cnn"
    vit_depth: Annotated[int, Range(ge=1)] = 2  # r50-vit transformer layers
    vit_dim: Annotated[int, Range(ge=4)] = 128  # r50-vit token width
    vit_heads: Annotated[int, Range(ge=1)] = 4  # r50-vit attention heads (vit_dim a multiple of 4 · vit_heads)
    width_mult: Annotated[float, Range(gt=0)] = 0.5  # mobilenetv2 width multiplier
    decoder_width: Annotated[int, Range(ge=0)] = 0  # U-Net decoder channels per level; 0 = same as the encoder skip
    # heterogeneous models: architectures given to the silos round-robin (silo i gets
    # per_silo[i % len]); only for algorithms that exchange outputs, not weights (fedmd, mdhfl)
    per_silo: list = field(default_factory=list)

    def validate(self) -> None:
        for name in [self.name, *self.per_silo]:
            if is_import_path(name):
                resolve(name, "model.name" if name == self.name else "model.per_silo")
            elif is_monai_name(name):
                continue  # its class is looked up (MONAI imported) when the plan builds the model
            elif not isinstance(name, str) or name.lower() not in MODEL_NAMES:
                raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}, a MONAI network "
                                  "as 'monai.NAME' (e.g. monai.DenseNet121) or a plug-in as 'package.module:factory'")
        if not isinstance(self.args, dict):
            raise ConfigError(f"model.args must be a mapping of keyword arguments, got {self.args!r}")

    @property
    def plugin(self) -> bool:
        """Whether the model (or one of ``per_silo``) comes from a Python plug-in."""
        return any(is_import_path(n) for n in [self.name, *self.per_silo])

    @property
    def monai(self) -> bool:
        """Whether the model (or one of ``per_silo``) is a MONAI network (``monai.NAME``)."""
        return any(is_monai_name(n) for n in [self.name, *self.per_silo])

    @property
    def builtin(self) -> bool:
        """Whether every architecture is one of fedsim's own backbones (what the downstream U-Net,
        FM-instructed initialization and the segmentation U-Net's encoder are built on)."""
        return not (self.plugin or self.monai)

    @property
    def heterogeneous(self) -> bool:
        return len({n if is_import_path(n) or is_monai_name(n) else n.lower() for n in self.per_silo}) > 1

    def for_silo(self, i: int | None) -> ModelConfig:
        """The model of silo ``i`` (``name`` when per_silo is empty; i None: the first silo's)."""
        if not self.per_silo:
            return self
        return replace(self, name=self.per_silo[(i or 0) % len(self.per_silo)], per_silo=[])

    @classmethod
    def from_dict(cls, d: dict | None) -> ModelConfig:
        return section_from_dict(cls, d, "model", ConfigError)
