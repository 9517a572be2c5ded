"""MONAI's 2D networks as fedsim models: ``model.name: monai.NAME`` is
``monai.networks.nets.NAME``, built with ``spatial_dims=2``, the data's channels, the task's
classes (``out_channels`` / ``num_classes``), the run's image size where the network needs one
(``img_size``) and ``model.args`` for the rest (``monai.ViT``: ``patch_size``, ``hidden_size``, …).

The feature map FedEFM's EMD weights and MOON's representations read is exposed, with the logits
from the same forward pass, for the classifiers whose layout fedsim knows:

* ``monai.DenseNet121`` / ``DenseNet169`` / ``DenseNet201`` / ``DenseNet264`` / ``DenseNet``: the
  trunk's map after the activation that opens MONAI's ``class_layers`` (what their pooling reads);
* ``monai.resnet10`` … ``resnet200`` / ``ResNet``: the map of ``layer4``;
* ``monai.ViT``: the patch tokens after the last block and its norm, laid out on the patch grid
  (B, hidden_size, H/patch, W/patch); the logits are a linear layer on their mean (MONAI's own
  head reads a class token and has no feature map; ``classification`` is therefore off).

Any other network is MONAI's module itself (its own state dict keys): fine for weight-sharing
algorithms; for the EMD or MOON name its feature layer in ``model.features_layer`` (e.g.
``features`` for a ``monai.DenseNet``, ``_conv_head`` for ``monai.EfficientNetBN``). A segmentation
network (``monai.BasicUNet``, ``monai.UNet``, ``monai.AttentionUnet``, …) is what
``task: segmentation`` silos train when named. Nothing is downloaded: ``pretrained`` is refused.
"""

from __future__ import annotations

import inspect
import warnings

from torch import Tensor, nn

from fedsim.config.models import MONAI_PREFIX
from fedsim.errors import ConfigError

__all__ = ["FEATURE_FAMILIES", "build_monai_model", "monai_class", "vit_patch_size"]

#: the networks whose feature map fedsim knows (see the module docstring)
FEATURE_FAMILIES = "monai.DenseNet121/169/201/264, monai.resnet10…200 and monai.ViT"
#: arguments fedsim sets from the run (the data, the task): model.args cannot change them
RUN_ARGS = ("spatial_dims", "in_channels", "n_input_channels", "out_channels", "num_classes")


def monai_class(name: str):
    """``monai.networks.nets.<NAME>`` for ``model.name: monai.NAME`` (MONAI imported here: it
    imports all of itself and torchvision, which only runs naming a MONAI network pay for)."""
    with warnings.catch_warnings():  # its import warns about torch APIs it uses, not about ours
        warnings.simplefilter("ignore", FutureWarning)
        import monai.networks.nets as nets

    attr = name[len(MONAI_PREFIX):]
    found = getattr(nets, attr, None)
    if not callable(found) or attr.startswith("_"):
        raise ConfigError(f"model.name {name}: monai.networks.nets has no network {attr!r} (e.g. DenseNet121, "
                          "resnet18, ViT, EfficientNetBN for classification; BasicUNet, UNet, AttentionUnet for "
                          "segmentation)")
    return found


def _parameters(fn) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``fn`` takes, following ``**kwargs`` to where they go: a class's
    base ``__init__`` (``SEResNet50`` → ``SENet``), MONAI's ``resnetN`` functions to ``ResNet``."""
    if isinstance(fn, type):
        chain = [c.__init__ for c in fn.__mro__ if "__init__" in vars(c) and c is not object]
    elif getattr(fn, "__name__", "").startswith("resnet"):
        from monai.networks.nets import ResNet  # already imported by monai_class

        chain = [fn, ResNet.__init__]
    else:
        chain = [fn]
    params: dict[str, inspect.Parameter] = {}
    for f in chain:
        own = inspect.signature(f).parameters
        params.update({k: v for k, v in own.items() if k not in params and k != "self"})
        if not any(v.kind is v.VAR_KEYWORD for v in own.values()):
            params = {k: v for k, v in params.items() if v.kind is not v.VAR_KEYWORD}
            break
    return params


def vit_patch_size(side: int) -> int:
    """The default patch of ``monai.ViT``: the divisor of the image side that gives the grid
    nearest to 8×8 patches (64 → 8, 96 → 12, 28 → 4, 224 → 28)."""
    divisors = [d for d in range(1, side + 1) if side % d == 0]
    return min(divisors, key=lambda d: (abs(side // d - 8), d))


def _run_kwargs(fn, name: str, args: dict, outputs: int, in_channels: int, image_size: int | None) -> dict:
    if args.get("pretrained"):
        raise ConfigError(f"model.args.pretrained: fedsim never downloads weights; start {name} from a state dict "
                          "with init_from: PATH instead")
    fixed = sorted(k for k in args if k in RUN_ARGS)
    if fixed:
        raise ConfigError(f"model.args.{fixed[0]} is set by fedsim from the run (2-D images, the data's channels, "
                          f"the task's classes); remove it from model.args of {name}")
    params = _parameters(fn)
    kwargs = {"spatial_dims": 2} if "spatial_dims" in params else {}
    if "pretrained" in params:  # some default to True (EfficientNetBN) and would download
        kwargs["pretrained"] = False
    for key in ("in_channels", "n_input_channels"):
        if key in params:
            kwargs[key] = in_channels
    for key in ("out_channels", "num_classes"):
        if key in params:
            kwargs[key] = outputs
    if "img_size" in params:
        given = args.get("img_size")
        if image_size is None and given is None:
            raise ConfigError(f"model {name} is built for one image size, and this data keeps its own: set "
                              "model.args.img_size to the side of the images")
        if image_size is not None and given is not None and given not in (image_size, [image_size] * 2):
            raise ConfigError(f"model.args.img_size {given} differs from the run's images ({image_size}); remove it")
        kwargs["img_size"] = (image_size, image_size) if image_size is not None else given
    unknown = sorted(k for k in args if k not in params and k != "img_size")
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"model.args.{unknown[0]} is not an argument of {name} (its arguments: "
                          f"{', '.join(k for k in params if k not in ('self', 'args', 'kwargs'))[:300]})")
    return {**{k: v for k, v in args.items() if k != "img_size"}, **kwargs}


def build_monai_model(name: str, args: dict, outputs: int, in_channels: int, image_size: int | None) -> nn.Module:
    """``monai.networks.nets.NAME`` for ``outputs`` classes (or segmentation classes) on
    ``in_channels``-channel images of side ``image_size`` (None: the data's own, unknown here),
    wrapped to expose its feature map when fedsim knows it (see the module docstring)."""
    fn = monai_class(name)
    attr = name[len(MONAI_PREFIX):]
    if attr == "ViT":
        kwargs = _run_kwargs(fn, name, args, outputs, in_channels, image_size)
        side = kwargs["img_size"][0] if isinstance(kwargs["img_size"], (list, tuple)) else kwargs["img_size"]
        kwargs.setdefault("patch_size", vit_patch_size(int(side)))
        kwargs.pop("num_classes", None)
        if kwargs.pop("classification", False):
            raise ConfigError("model.args.classification: monai.ViT's class-token head has no feature map; fedsim "
                              "gives it a linear head on the mean of the patch tokens (leave classification unset)")
        return _call(fn, name, kwargs, lambda net: MonaiViT(net, int(net.norm.normalized_shape[0]), outputs,
                                                            kwargs["patch_size"]))
    kwargs = _run_kwargs(fn, name, args, outputs, in_channels, image_size)
    if attr.startswith("DenseNet"):
        return _call(fn, name, kwargs, MonaiDenseNet)
    if attr.startswith("resnet") or attr == "ResNet":
        return _call(fn, name, kwargs, MonaiResNet)
    return _call(fn, name, kwargs, lambda net: net)


def _call(fn, name: str, kwargs: dict, wrap) -> nn.Module:
    try:
        net = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - MONAI's own message says which argument does not fit
        missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
        if type(exc).__name__ == "OptionalImportError" or missing:
            package = (missing or str(exc).split("from ", 1)[-1].split(".")[0].split()[0]).split(".")[0]
            raise ConfigError(f"model {name} needs the Python package {package!r}, which MONAI imports only for some "
                              f"networks: pip install {package}") from None
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ConfigError(f"model {name}({shown}) raised {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return wrap(net)


class MonaiDenseNet(nn.Module):
    """A MONAI DenseNet (``net``) with fedsim's backbone interface: ``features`` the trunk's map
    after the class layers' activation, ``head`` their pooling and linear layer."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.head_prefixes = ("net.class_layers.",)

    def features(self, x: Tensor) -> Tensor:
        # the map the pooling reads: after the class layers' activation (MONAI's is in place, so
        # applied here once to the trunk's fresh output rather than to a map a caller holds)
        return self.net.class_layers.relu(self.net.features(x))

    def head(self, f: Tensor) -> Tensor:
        layers = self.net.class_layers
        return layers.out(layers.flatten(layers.pool(f)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MonaiResNet(nn.Module):
    """A MONAI ResNet (``net``) with fedsim's backbone interface: ``features`` the map of
    ``layer4``, ``head`` its pooling and ``fc``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.head_prefixes = ("net.fc.",)

    def features(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.act(n.bn1(n.conv1(x)))
        if not n.no_max_pool:
            x = n.maxpool(x)
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def head(self, f: Tensor) -> Tensor:
        f = self.net.avgpool(f).flatten(1)
        return self.net.fc(f) if self.net.fc is not None else f

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MonaiViT(nn.Module):
    """MONAI's ViT (``net``, no class token) with a linear head on the mean patch token; its
    feature map is the patch tokens on the patch grid."""

    def __init__(self, net: nn.Module, hidden: int, num_classes: int, patch_size) -> None:
        super().__init__()
        self.net = net
        self.patch = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else (patch_size, patch_size)
        self.fc = nn.Linear(hidden, num_classes)
        self.head_prefixes = ("fc.",)

    def features(self, x: Tensor) -> Tensor:
        tokens = self.net(x)[0]  # (B, h·w, hidden) after the last block and the norm
        h, w = x.shape[-2] // self.patch[0], x.shape[-1] // self.patch[1]
        return tokens.transpose(1, 2).reshape(x.shape[0], tokens.shape[-1], h, w)

    def head(self, f: Tensor) -> Tensor:
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
