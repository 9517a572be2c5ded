"""Models from a Python plug-in (``model.name: "my_pkg.models:make_net"``).

The factory is called as ``make_net(num_classes=C, in_channels=K, **model.args)`` and returns an
``nn.Module`` whose ``forward(x)`` gives logits (B, C). Weight-sharing algorithms need nothing
more. FedEFM (EMD weights) and MOON (representations) also need a dense feature map (B, C', h, w)
per batch; a plug-in provides it in one of two ways:

* a ``features(x)`` method (and, optionally, ``head(features) -> logits``, so that one forward
  pass gives both; without it the model runs twice per batch), or
* ``model.features_layer: NAME`` — the dotted name of a submodule (``named_modules()``) whose
  output is that map; a forward hook captures it during ``forward(x)``.

The module itself is what silos train, send and average: its state dict keys are the user's own
(``foundation.pt`` loads straight into the user's class).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedsim.config.models import is_monai_name
from fedsim.errors import ConfigError
from fedsim.plugins import call

from .features import FeatureTap, features_of, has_feature_map
from .monai_nets import FEATURE_FAMILIES

KEY = "model.name"


def build_plugin_model(cfg, num_classes: int, in_channels: int) -> nn.Module:
    """Call the factory ``cfg.name`` and attach the feature hook of ``cfg.features_layer``."""
    model = call(cfg.name, KEY, ConfigError, num_classes=num_classes, in_channels=in_channels, **cfg.args)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{KEY}: {cfg.name} returned a {type(model).__name__}, not a torch.nn.Module")
    return attach_feature_tap(model, cfg.features_layer, cfg.name)


def attach_feature_tap(model: nn.Module, layer_name: str | None, name: str) -> nn.Module:
    """Hook the submodule ``layer_name`` (``model.features_layer``) of ``model`` so that its output
    is the model's dense feature map; ``model`` unchanged when no layer is named."""
    if layer_name:
        modules = dict(model.named_modules())
        layer = modules.get(layer_name)
        if layer is None or layer_name == "":
            names = ", ".join(n for n in modules if n)[:300]
            raise ConfigError(f"model.features_layer {layer_name!r} is not a submodule of {name} "
                              f"(its submodules: {names})")
        tap = FeatureTap(layer_name)
        layer.register_forward_hook(tap)
        model.fedsim_feature_tap = tap  # a plain attribute: not a parameter, not in the state dict
    return model


def check_model(model: nn.Module, x: Tensor, num_classes: int, needs_features: str | None, name: str,
                grid: int | None = None) -> None:
    """One forward pass on a sample batch ``x``, before training: the logits have the shape a
    classifier of ``num_classes`` must give and — when the algorithm ``needs_features`` — there is
    a feature map, at least ``grid``×``grid`` when the EMD pools it to that grid. Every misfit is
    one ConfigError line."""
    if needs_features and not has_feature_map(model) and is_monai_name(name):
        raise ConfigError(
            f"algorithm {needs_features} needs a dense feature map (B, C, h, w) and fedsim knows none of model "
            f"{name} (it knows those of {FEATURE_FAMILIES}): set model.features_layer to the submodule whose "
            "output is that map")
    if needs_features and not has_feature_map(model):
        raise ConfigError(
            f"algorithm {needs_features} needs a dense feature map (B, C, h, w) from model {name}: give the module "
            "a features(x) method (and head(features) -> logits to save a second forward pass), or set "
            "model.features_layer to the submodule whose output is that map")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                logits = model(x)
                feats = features_of(model, x) if needs_features else None
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - user code: one line, not a traceback
                raise ConfigError(f"model {name}: forward on a batch of shape {tuple(x.shape)} raised "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        model.train(was)
    if not isinstance(logits, Tensor) or tuple(logits.shape) != (x.shape[0], num_classes):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ConfigError(f"model {name}: forward(x) on a batch of shape {tuple(x.shape)} gave {got}; it must give "
                          f"logits of shape ({x.shape[0]}, {num_classes}) — build the head with num_classes")
    if feats is not None and (not isinstance(feats, Tensor) or feats.dim() not in (2, 3, 4)
                              or feats.shape[0] != x.shape[0]):
        got = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
        raise ConfigError(f"model {name}: the feature map has shape {got}; {needs_features} needs (B, C, h, w)")
    if feats is not None and grid and feats.dim() == 4 and min(feats.shape[-2:]) < grid:
        raise ConfigError(f"model {name}: the feature map of a {tuple(x.shape[-2:])} image is "
                          f"{tuple(feats.shape[-2:])}, smaller than emd.grid {grid}: set emd.grid <= "
                          f"{min(feats.shape[-2:])} or use larger images")
