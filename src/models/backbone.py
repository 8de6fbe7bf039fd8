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
    check_weights(backbone, weights)
    build = _timm_model if backbone.is_timm else _torchvision_model
    try:
        net = build(backbone, None if local else weights, kwargs)
    except (TypeError, ValueError) as err:  # a constructor argument it does not take
        raise UserError(
            f"Cannot build {backbone} with model.backbone_kwargs={kwargs}: {err}"
        ) from err
    heads = classifier_prefixes(net, backbone)
    if local:
        from src.models.weights_file import load_local_weights

        load_local_weights(net, Path(str(weights)), backbone, heads, weights_by_position)
    return net, remove_classifier(net, backbone)


def weights_preprocessing(name: str, weights: str | None) -> dict | None:
    """The preprocessing the backbone's weights were trained with, as `Preprocessing`'s fields
    (`src.data.transforms`); None for random initialisation (ImageNet's values then).

    timm: the model's data config (`timm.data.resolve_data_config`), also for a local weights
    file of a timm architecture (the config of its default or named pretrained tag).
    torchvision: the weights' own transforms; a local file gets those of `DEFAULT`.
    """
    backbone = parse_backbone(name)  # (checked here, before any image is read)
    check_weights(backbone, weights)
    if weights is None:
        return None
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
