"""Build any torchvision or timm classification model as a backbone: images in, features out.

The network's own classification layer is removed wherever it sits (`fc`, `classifier.3`,
`heads.head`, timm's `reset_classifier`) and the width of what fed it is returned, so the
LightningModule can put a new head of that width on top. Weights come from a weights name
of that backbone (downloaded once by torchvision or timm), a local file, or nowhere.
"""

import logging
import math
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn

from src.errors import UserError
from src.models.backbone_names import (
    DEFAULT_WEIGHTS,
    BackboneName,
    check_weights,
    looks_like_path,
    parse_backbone,
)

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "To run without internet access, either use random initialisation (model.weights=null) "
    "or download the weights once on a machine with internet access (torchvision caches "
    "them in ~/.cache/torch/hub/checkpoints/, timm in ~/.cache/huggingface/hub/) and pass "
    "the file as model.weights=/path/to/weights.pth."
)
IMAGENET_CLASSES = 1000


def build_backbone(
    name: str, weights: str | None, kwargs: dict | None = None, weights_by_position: bool = False
) -> tuple[nn.Module, int]:
    """Return the backbone of `name` without its classification layer, and its feature width.

    `weights`: a weights name of that backbone (torchvision: `DEFAULT`, `IMAGENET1K_V1`, ...;
    timm: `DEFAULT` or a pretrained tag such as `augreg_in21k_ft_in1k`), a path to a state
    dict (`.pth`, `.pt`, `.safetensors`, or a `.ckpt` of this template), or `None` for
    random initialisation. `kwargs` go to the model's constructor (e.g. a ViT's image size;
    a `None` value keeps the constructor's default). `weights_by_position`: load a file
    whose key names differ from the architecture's by the order of its tensors (see
    `load_local_weights`).
    """
    backbone = parse_backbone(name)
    kwargs = {key: value for key, value in (kwargs or {}).items() if value is not None}
    local = weights is not None and looks_like_path(str(weights))
    if not local:
        check_weights(backbone, weights)
    build = _timm_model if backbone.is_timm else _torchvision_model
    net = build(backbone, None if local else weights, kwargs)
    heads = classifier_prefixes(net, backbone)
    if local:
        load_local_weights(net, Path(str(weights)), backbone, heads, weights_by_position)
    return net, remove_classifier(net, backbone)


def weights_preprocessing(name: str, weights: str | None) -> dict | None:
    """The preprocessing the backbone's weights were trained with, as `Preprocessing`'s fields
    (`src.data.transforms`); None for random initialisation (ImageNet's values then).

    timm: the model's data config (`timm.data.resolve_data_config`), also for a local weights
    file of a timm architecture (the config of its default or named pretrained tag).
    torchvision: the weights' own transforms; a local file gets those of `DEFAULT`.
    """
    if weights is None:
        return None
    backbone = parse_backbone(name)
    local = looks_like_path(str(weights))
    if backbone.is_timm:
        from timm.data import resolve_data_config
        from timm.models import get_pretrained_cfg

        tag = backbone.tag if local or weights == DEFAULT_WEIGHTS else weights
        pretrained = get_pretrained_cfg(f"{backbone.arch}.{tag}" if tag else backbone.arch)
        if pretrained is None:  # a model timm has no pretrained weights for
            return None
        config = resolve_data_config(pretrained_cfg=pretrained.to_dict())
        if config.get("crop_mode", "center") != "center":
            log.warning(
                "%s was evaluated with crop mode %r; this template always centre-crops.",
                backbone, config["crop_mode"],
            )  # fmt: skip
        size = config["input_size"][-1]
        return {
            "image_size": size,
            "resize_size": math.floor(size / config["crop_pct"]),  # as timm's eval transform
            "mean": list(config["mean"]),
            "std": list(config["std"]),
            "interpolation": config["interpolation"],
        }
    from torchvision.models import get_model_weights

    transforms = get_model_weights(backbone.arch)[
        DEFAULT_WEIGHTS if local else weights
    ].transforms()
    return {
        "image_size": transforms.crop_size[0],
        "resize_size": transforms.resize_size[0],
        "mean": list(transforms.mean),
        "std": list(transforms.std),
        "interpolation": transforms.interpolation.value,
    }


def _torchvision_model(backbone: BackboneName, weights: str | None, kwargs: dict) -> nn.Module:
    from torchvision.models import get_model, get_model_weights

    tv_weights = get_model_weights(backbone.arch)[weights] if weights else None
    try:
        net = get_model(backbone.arch, weights=tv_weights, **kwargs)
    except (URLError, OSError, RuntimeError) as err:
        if tv_weights is None:
            raise
        raise UserError(
            f"Could not download the weights {weights} of {backbone} from {tv_weights.url} "
            f"({err}).\n{OFFLINE_HINT}"
        ) from err
    except (TypeError, ValueError) as err:  # a constructor argument it does not take
        raise UserError(
            f"Cannot build {backbone} with model.backbone_kwargs={kwargs}: {err}"
        ) from err
    # Inception and GoogLeNet return extra auxiliary logits while training; their
    # constructors remove them the same way when asked to.
    if getattr(net, "aux_logits", False):
        net.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(net, aux):
                setattr(net, aux, None)
    return net


def last_classifier_layer(net: nn.Module, backbone) -> tuple[str, nn.Linear]:
    """The ImageNet classification layer: the last `Linear` with 1000 outputs."""
    linears = [
        (name, module)
        for name, module in net.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == IMAGENET_CLASSES
    ]
    if not linears:
        raise UserError(
            f"{backbone} has no Linear classification layer to replace (e.g. SqueezeNet "
            "classifies with a convolution); choose another model.backbone."
        )
    return linears[-1]


def classifier_prefixes(net: nn.Module, backbone: BackboneName) -> tuple[str, ...]:
    """Where the network's (and its weights files') classifier parameters are: `fc.`, ..."""
    if backbone.is_timm:  # ("head", "fc"; two names for distilled models)
        heads = net.pretrained_cfg.get("classifier") or "head"
        return tuple(f"{h}." for h in ([heads] if isinstance(heads, str) else heads))
    return (f"{last_classifier_layer(net, backbone)[0]}.",)


def remove_classifier(net: nn.Module, backbone: BackboneName) -> int:
    """Drop the network's classification layer, so it returns pooled features; their width."""
    if backbone.is_timm:
        head = net.get_classifier()
        width = head.in_features if isinstance(head, nn.Linear) else net.num_features
        net.reset_classifier(0)  # timm's own way to drop the head
        return width
    name, head = last_classifier_layer(net, backbone)
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    parent._modules[child] = nn.Identity()  # also for the numbered children of nn.Sequential
    return head.in_features


def _timm_model(backbone: BackboneName, weights: str | None, kwargs: dict) -> nn.Module:
    import timm

    full_name = f"{backbone.arch}.{backbone.tag}" if backbone.tag else backbone.arch
    if weights and weights != DEFAULT_WEIGHTS:
        full_name = f"{backbone.arch}.{weights}"
    try:
        return timm.create_model(full_name, pretrained=weights is not None, **kwargs)
    except OSError as err:  # huggingface_hub's "not in the cache and no connection"
        raise UserError(
            f"Could not download the timm weights {full_name} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}).\n{OFFLINE_HINT}"
        ) from err
    except (TypeError, ValueError) as err:
        raise UserError(
            f"Cannot build {backbone} with model.backbone_kwargs={kwargs}: {err}"
        ) from err


def load_local_weights(
    net: nn.Module,
    path: Path,
    backbone: BackboneName,
    heads: tuple[str, ...],
    by_position: bool = False,
) -> None:
    """Load a state dict file into `net`; every key but the classifier's (`heads`) must match.

    Accepts a plain state dict (torchvision's and timm's downloads), one wrapped in
    `{"state_dict": ...}` or `{"model": ...}`, and a checkpoint of this template (its
    `backbone.*` weights). A classifier of any size (another task's head) is dropped.
    `by_position` (`model.weights_by_position`): the file's key names may differ from the
    architecture's (weights exported by another library); its tensors are matched to the
    architecture's in order, every shape must agree, and the mapping is logged.
    """
    state_dict = read_state_dict(path)
    if by_position:
        state_dict = rename_by_position(state_dict, net.state_dict(), heads, path)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(heads)}
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith(heads)}
    mismatch = state_dict_mismatch(expected, state_dict)
    if mismatch:
        renamed = " Same tensors under other names: add model.weights_by_position=true."
        raise UserError(
            f"model.weights file {path} does not hold {display_name(backbone)} weights: "
            f"{mismatch}. Use weights saved from the same architecture as model.backbone."
            + ("" if by_position else renamed)
        )
    net.load_state_dict(state_dict, strict=False)


def rename_by_position(
    given: dict[str, torch.Tensor], expected: dict, heads: tuple[str, ...], path: Path
) -> dict[str, torch.Tensor]:
    """`given`'s tensors under `expected`'s names, paired in order; logs the pairs.

    The file holds either every tensor of the architecture or all but its classifier; a
    classifier of another size (another task's head) is left out.
    """
    names = list(expected)
    if len(given) != len(names):
        names = [k for k in names if not k.startswith(heads)]
    if len(given) != len(names):
        raise UserError(
            f"model.weights_by_position: {path} holds {len(given)} tensors, but the "
            f"architecture has {len(expected)} ({len(names)} without its classifier), so they "
            "cannot be paired in order. Check model.backbone."
        )
    renamed, pairs = {}, []
    for name, (source, tensor) in zip(names, given.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected[name].shape):
            if name.startswith(heads):
                continue
            raise UserError(
                f"model.weights_by_position: tensor {len(pairs) + 1} of {path}, {source} "
                f"{tuple(tensor.shape)}, does not fit {name} {tuple(expected[name].shape)}: "
                "the file is not of this architecture, or its tensors are in another order."
            )
        renamed[name] = tensor
        pairs.append(f"  {name} <- {source}")
    log.info("Loaded %s by position (%d tensors):\n%s", path, len(pairs), "\n".join(pairs))
    return renamed


def state_dict_mismatch(expected: dict, given: dict) -> str:
    """What keeps `given` from loading where `expected` is (keys, shapes); empty if nothing."""
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    shapes = [
        f"{k} {tuple(given[k].shape)} (needs {tuple(expected[k].shape)})"
        for k in sorted(expected.keys() & given.keys())
        if tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    problems = [
        f"{len(missing)} missing keys (e.g. {missing[:3]})" if missing else "",
        f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})" if unexpected else "",
        f"{len(shapes)} of another shape (e.g. {shapes[:2]})" if shapes else "",
    ]
    return "; ".join(p for p in problems if p)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = path.expanduser()
    if not path.is_file():
        raise UserError(f"model.weights file not found: {path}. {OFFLINE_HINT}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(path)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"model.weights file {path} is not a readable state dict ({err}).") from err
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        inner = loaded["state_dict"]
        backbone_keys = {
            k[len("backbone.") :]: v for k, v in inner.items() if k.startswith("backbone.")
        }
        loaded = backbone_keys or inner
    elif isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict):
        raise UserError(
            f"model.weights file {path} holds a {type(loaded).__name__}, not a state dict."
        )
    if loaded and all(k.startswith("module.") for k in loaded):  # saved from DataParallel/DDP
        loaded = {k[len("module.") :]: v for k, v in loaded.items()}
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def display_name(backbone: BackboneName) -> str:
    """`ResNet18` for torchvision's resnet18 (its weights enum's name), the name otherwise."""
    if backbone.is_timm:
        return str(backbone)
    from torchvision.models import get_model_weights

    return get_model_weights(backbone.arch).__name__.removesuffix("_Weights")
