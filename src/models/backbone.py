"""Build any torchvision or timm classification model as a backbone: images in, features out.

The network's own classification layer is removed wherever it sits (`fc`, `classifier.3`,
`heads.head`, timm's `reset_classifier`) and the width of what fed it is returned, so the
LightningModule can put a new head of that width on top. Weights come from a weights name
of that backbone (downloaded once by torchvision or timm), a local file, or nowhere.
"""

import logging
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
    name: str, weights: str | None, kwargs: dict | None = None
) -> tuple[nn.Module, int]:
    """Return the backbone of `name` without its classification layer, and its feature width.

    `weights`: a weights name of that backbone (torchvision: `DEFAULT`, `IMAGENET1K_V1`, ...;
    timm: `DEFAULT` or a pretrained tag such as `augreg_in21k_ft_in1k`), a path to a state
    dict (`.pth`, `.pt`, `.safetensors`, or a `.ckpt` of this template), or `None` for
    random initialisation. `kwargs` go to the model's constructor (e.g. a ViT's image size).
    """
    backbone = parse_backbone(name)
    kwargs = dict(kwargs or {})
    local = weights is not None and looks_like_path(str(weights))
    if not local:
        check_weights(backbone, weights)
    if backbone.is_timm:
        net, heads, width = _timm_model(backbone, None if local else weights, kwargs)
    else:
        net, heads, width = _torchvision_model(backbone, None if local else weights, kwargs)
    if local:
        load_local_weights(net, Path(str(weights)), backbone, heads)
    return net, width


def _torchvision_model(backbone: BackboneName, weights: str | None, kwargs: dict):
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
    head_name, head = last_classifier_layer(net, backbone)
    replace_module(net, head_name, nn.Identity())
    return net, (f"{head_name}.",), head.in_features


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


def replace_module(net: nn.Module, dotted_name: str, new: nn.Module) -> None:
    parent_name, _, child = dotted_name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    parent._modules[child] = new  # also for the numbered children of nn.Sequential


def _timm_model(backbone: BackboneName, weights: str | None, kwargs: dict):
    import timm

    full_name = f"{backbone.arch}.{backbone.tag}" if backbone.tag else backbone.arch
    if weights and weights != DEFAULT_WEIGHTS:
        full_name = f"{backbone.arch}.{weights}"
    try:
        net = timm.create_model(full_name, pretrained=weights is not None, **kwargs)
    except OSError as err:  # huggingface_hub's "not in the cache and no connection"
        raise UserError(
            f"Could not download the timm weights {full_name} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}).\n{OFFLINE_HINT}"
        ) from err
    except (TypeError, ValueError) as err:
        raise UserError(
            f"Cannot build {backbone} with model.backbone_kwargs={kwargs}: {err}"
        ) from err
    head = net.get_classifier()
    width = head.in_features if isinstance(head, nn.Linear) else net.num_features
    # Where timm files hold the classifier ("head", "fc"; two names for distilled models).
    heads = net.pretrained_cfg.get("classifier") or "head"
    heads = tuple(f"{h}." for h in ([heads] if isinstance(heads, str) else heads))
    net.reset_classifier(0)  # timm's own way to drop the head: forward returns pooled features
    if weights is not None:
        warn_on_other_normalisation(full_name, net.pretrained_cfg)
    return net, heads, width


def warn_on_other_normalisation(name: str, pretrained_cfg: dict) -> None:
    """The data pipeline normalises with ImageNet's mean and std; say when weights expect other."""
    from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean, std = pretrained_cfg.get("mean"), pretrained_cfg.get("std")
    if mean is None or std is None:
        return
    given, expected = (*mean, *std), (*IMAGENET_MEAN, *IMAGENET_STD)
    if len(given) != len(expected) or any(
        abs(a - b) > 1e-3 for a, b in zip(given, expected, strict=True)
    ):
        log.warning(
            "%s was pretrained on inputs normalised with mean %s and std %s; this template "
            "normalises with ImageNet's %s and %s. Fine-tuning adapts to it, but frozen "
            "features are off their training distribution.",
            name, mean, std, IMAGENET_MEAN, IMAGENET_STD,
        )  # fmt: skip


def load_local_weights(
    net: nn.Module, path: Path, backbone: BackboneName, skip_prefixes: tuple[str, ...]
) -> None:
    """Load a state dict file into `net`; every key but the old classifier's must match.

    Accepts a plain state dict (torchvision's and timm's downloads), one wrapped in
    `{"state_dict": ...}` or `{"model": ...}`, and a checkpoint of this template (its
    `backbone.*` weights). A classifier of any size (another task's head) is dropped.
    """
    state_dict = read_state_dict(path)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(skip_prefixes)}
    mismatch = state_dict_mismatch(net.state_dict(), state_dict)
    if mismatch:
        raise UserError(
            f"model.weights file {path} does not hold {display_name(backbone)} weights: "
            f"{mismatch}. Use weights saved from the same architecture as model.backbone."
        )
    net.load_state_dict(state_dict)


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
