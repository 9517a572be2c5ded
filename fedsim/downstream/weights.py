"""Foundation weights into the downstream models: reading a ``foundation.pt`` as data, and building
the U-Net and the tube-position classifier with every backbone tensor copied from it (or a
one-line error naming the file when it does not fit)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from fedsim.checkpoint import load_data_file
from fedsim.errors import ConfigError, UnreadableFileError, UnsafeFileError
from fedsim.models import ModelConfig, build_model, build_segmenter


def model_config(model_cfg):
    """The model settings from a config, its dict or None (the defaults)."""
    if model_cfg is None:
        return ModelConfig()
    if isinstance(model_cfg, dict):
        return ModelConfig.from_dict(model_cfg)
    return model_cfg


def load_foundation_file(path: str | Path) -> dict:
    """A ``foundation.pt`` state dict (tensors only). Also accepts a dict holding one under
    ``state_dict``/``model``/``foundation``. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: foundation file not found")
    try:
        obj = load_data_file(path)
    except UnsafeFileError:
        raise
    except UnreadableFileError as exc:  # a file given in the config or on the command line: a config error
        raise ConfigError(str(exc)) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "foundation"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path}: not a model state dict (expected a dict of tensors, as in runs/NAME/foundation.pt)")
    return obj


def resolve_init(init) -> tuple[dict | None, str]:
    """``(state dict or None, where it comes from)`` of an initialization: None (random), a path
    to ``foundation.pt`` or a state dict."""
    if init is None:
        return None, "random"
    if isinstance(init, (str, Path)):
        return load_foundation_file(init), str(init)
    if isinstance(init, dict):
        return init, "state dict"
    raise ConfigError(f"an initialization must be None, a path or a state dict, got {type(init).__name__}")


def _backbone_source(state: dict) -> dict:
    """Strip ``module.``; reduce a segmenter's state dict to its encoder."""
    src = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if any(k.startswith(("lateral.", "up.", "final.")) for k in src):
        src = {k[len("encoder."):]: v for k, v in src.items() if k.startswith("encoder.")}
    return src


def load_classifier_backbone(model: nn.Module, state: dict, source: str = "foundation") -> int:
    """Copy every non-head tensor of ``model`` from ``state`` (names and shapes must match; the
    head keeps its fresh initialisation). Raises :class:`ConfigError` naming ``source`` when any
    backbone tensor is missing or has another shape. Returns the number of tensors copied."""
    src = _backbone_source(state)
    own = model.state_dict()
    heads = tuple(model.head_prefixes)
    missing, copied = [], 0
    for k, v in own.items():
        if k.startswith(heads):
            continue
        if k not in src or tuple(src[k].shape) != tuple(v.shape):
            missing.append(k)
    if missing:
        raise ConfigError(_misfit(source, missing, len(own)))
    with torch.no_grad():
        for k, v in own.items():
            if not k.startswith(heads):
                v.copy_(src[k].to(dtype=v.dtype))
                copied += 1
    return copied


def _misfit(source: str, missing: list[str], total: int) -> str:
    return (f"{source}: state dict does not fit the downstream model ({len(missing)} of {total} backbone tensors "
            f"missing or of another shape, e.g. {missing[0]}); pass the model settings it was trained with "
            "(--model-set name=... width=...)")


def _load_encoder(unet, state: dict, source: str) -> int:
    heads = tuple(unet.encoder.head_prefixes)
    expected = [k for k in unet.encoder.state_dict() if not k.startswith(heads)]
    n = unet.load_foundation(state)
    if n != len(expected):
        src = _backbone_source(state)
        own = unet.encoder.state_dict()
        missing = [k for k in expected if k not in src or tuple(src[k].shape) != tuple(own[k].shape)]
        raise ConfigError(_misfit(source, missing or expected, len(expected)))
    return n


def check_fit(resolved: dict, mcfg) -> None:
    """Every ``{name: (state, source)}`` fits the model ``mcfg`` builds, before any training: else a
    :class:`ConfigError` naming the source."""
    probe = build_model(mcfg, num_classes=3)
    for _name, (state, source) in resolved.items():
        if state is None:
            continue
        src = _backbone_source(state)
        own = probe.state_dict()
        heads = tuple(probe.head_prefixes)
        missing = [k for k, v in own.items() if not k.startswith(heads)
                   and (k not in src or tuple(src[k].shape) != tuple(v.shape))]
        if missing:
            raise ConfigError(_misfit(source, missing, len(own)))


def init_segmenter(init_state: dict | None, model_cfg=None, seed: int = 0, in_channels: int = 1,
                   source: str = "foundation", raw_branch: bool = False):
    """``(unet, tensors_loaded)``: a U-Net built under ``torch.manual_seed(seed)`` (so the decoder
    is the same for every initialization), its encoder's backbone tensors then overwritten from
    ``init_state`` (all of them or a :class:`ConfigError` naming ``source``). ``raw_branch``: the
    decoder's full-resolution conv on the input (:class:`fedsim.models.UNet`)."""
    torch.manual_seed(seed)
    model = build_segmenter(model_config(model_cfg), num_seg_classes=3, in_channels=in_channels,
                            raw_branch=raw_branch)
    loaded = _load_encoder(model, init_state, source) if init_state is not None else 0
    return model, loaded


def init_classifier(init_state: dict | None, model_cfg=None, seed: int = 0, in_channels: int = 1,
                    source: str = "foundation"):
    """``(classifier, tensors_loaded)``: a 3-class tube-position classifier built under
    ``torch.manual_seed(seed + 1)``, every backbone tensor copied from ``init_state``, the head
    (``head_prefixes``) left at its fresh initialisation."""
    torch.manual_seed(seed + 1)
    model = build_model(model_config(model_cfg), num_classes=3, in_channels=in_channels)
    loaded = load_classifier_backbone(model, init_state, source) if init_state is not None else 0
    return model, loaded
