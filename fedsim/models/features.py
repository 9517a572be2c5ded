"""The dense feature map every model offers beside its logits (built-in models: ``features(x)``
and ``head(features)``; a plug-in: its own ``features(x)`` or the submodule named by
``model.features_layer``, captured by a :class:`FeatureTap`): what FedEFM's EMD weights and
MOON's representations read."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from fedsim.errors import ConfigError


class FeatureTap:
    """A forward hook keeping the last output of the submodule it is registered on."""

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.value: Tensor | None = None

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.value = output

    def take(self) -> Tensor:
        value, self.value = self.value, None
        if value is None:
            raise ConfigError(f"model.features_layer {self.layer!r} did not run in forward(x)")
        return value


def feature_tap(model: nn.Module) -> FeatureTap | None:
    return model.__dict__.get("fedsim_feature_tap")


def has_feature_map(model: nn.Module) -> bool:
    return feature_tap(model) is not None or callable(getattr(model, "features", None))


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The logits and the dense feature map (B, C, h, w): one forward pass for the built-in
    models, plug-ins with ``features`` + ``head`` and plug-ins with ``model.features_layer``; a
    plug-in with only ``features(x)`` runs twice."""
    tap = feature_tap(model)
    if tap is not None:
        return model(x), tap.take()
    if callable(getattr(model, "head", None)):
        feats = model.features(x)
        return model.head(feats), feats
    return model(x), model.features(x)


def features_of(model: nn.Module, x: Tensor) -> Tensor:
    """The dense feature map of ``x`` (``features(x)``, or the hooked ``model.features_layer``)."""
    tap = feature_tap(model)
    if tap is not None:
        model(x)
        return tap.take()
    return model.features(x)


def representation(feats: Tensor) -> Tensor:
    """A feature map (B, C, h, w) pooled to one vector per sample (B, C); (B, C) stays."""
    return feats.mean(dim=(2, 3)) if feats.dim() == 4 else feats.flatten(1)
