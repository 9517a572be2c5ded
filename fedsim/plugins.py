"""Python plug-ins: ``"my_pkg.models:make_net"`` names a callable to import.

A plug-in is imported from the working directory or ``PYTHONPATH`` (the working directory is put
on ``sys.path`` first: the ``fedsim`` console script does not do it, ``python -m`` does). Every
failure — the module cannot be imported, the attribute is missing or not callable, the call
raises — is a one-line :class:`~fedsim.errors.FedsimError` (ConfigError for models, DataError
for data) naming the config key and the path.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from fedsim.errors import ConfigError, FedsimError


def is_import_path(value: Any) -> bool:
    """Whether a config value names a plug-in (``module:attribute``) rather than a built-in."""
    return isinstance(value, str) and ":" in value


def _ensure_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def resolve(path: str, key: str, error: type[FedsimError] = ConfigError) -> Callable[..., Any]:
    """The callable ``path`` (``"pkg.module:attr"``, ``attr`` may be dotted) names; ``key`` is the
    config key that holds it, for the error message."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise error(f"{key}: {path!r} is not an import path; write it as 'package.module:function'")
    _ensure_cwd_on_path()
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure of user code is reported in one line
        raise error(f"{key}: cannot import module {module_name!r} of {path!r} ({type(exc).__name__}: {exc}); "
                    "it is looked up in the working directory and on PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"{key}: module {module_name!r} has no attribute {attr!r} ({path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise error(f"{key}: {path!r} is a {type(obj).__name__}, not a callable")
    return obj


def call(path: str, key: str, error: type[FedsimError] = ConfigError, **kwargs: Any) -> Any:
    """Import ``path`` and call it with ``kwargs``; an exception inside it is one line naming the
    path and the call (the user's traceback would only hide which setting to fix)."""
    fn = resolve(path, key, error)
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - user code: report, do not crash with a traceback
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise error(f"{key}: {path}({shown}) raised {type(exc).__name__}: {exc}") from None


def check_combinations(cfg: Any) -> None:
    """Settings of an experiment that your own data or model cannot serve, refused before any
    rank starts: the downstream stage (synthetic grayscale X-rays, built-in models), segmentation
    (masks and a U-Net encoder), FM-instructed initialization (a grayscale proxy set) and the
    public set of FedDF / FedMD / MDH-FL (synthetic or ``root/public`` only)."""
    data, model = cfg.data, cfg.model
    own_data = data.kind in ("torchvision", "python", "medmnist")
    if cfg.downstream.enabled and (own_data or data.channels == 3 or not model.builtin):
        what = f"data.kind {data.kind}" if own_data else "RGB data" if data.channels == 3 else f"model {model.name}"
        raise ConfigError(f"downstream fine-tuning runs on the synthetic grayscale X-ray set with a built-in model, "
                          f"not with {what}: set downstream.enabled: false")
    if cfg.task == "segmentation":
        if own_data:
            raise ConfigError(f"task: segmentation needs per-pixel masks; data.kind {data.kind} has none "
                              "(use folder data with root/<silo>/masks/)")
        if model.plugin:
            raise ConfigError(f"task: segmentation builds a U-Net on a built-in encoder, not on model {model.name}")
    if cfg.init in ("pretrained", "fm") and (own_data or data.channels == 3 or not model.builtin):
        raise ConfigError(f"init: {cfg.init} trains on the grayscale synthetic proxy set with a built-in model; "
                          "use init: random (or init_from: PATH) with your own data or model")
    public = {"feddf", "fedmd", "mdhfl"}
    for name in [cfg.algorithm, *cfg.compare_with]:
        if name in public and own_data:
            raise ConfigError(f"algorithm {name} distils on a public set, which data.kind {data.kind} does not "
                              "have; use synthetic or folder data (root/public)")
