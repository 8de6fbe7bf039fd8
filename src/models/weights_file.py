"""Backbone weights from a file (`model.weights=/path/to/file`): a state dict saved by
torchvision, timm or this template, or, with `model.weights_by_position`, one whose key names
differ from the architecture's."""

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model_weights

from src.errors import UserError
from src.models.backbone import OFFLINE_HINT
from src.models.backbone_names import BackboneName

log = logging.getLogger(__name__)


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
        # torchvision's architectures as their weights enum names them (`ResNet18`).
        name = str(backbone) if backbone.is_timm else get_model_weights(backbone.arch).__name__
        raise UserError(
            f"model.weights file {path} does not hold {name.removesuffix('_Weights')} weights: "
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
    """The tensors of a weights file, read by timm's `load_state_dict` (safetensors too; the
    state dict inside a `{"state_dict": ...}` or `{"model": ...}` checkpoint; `module.`
    prefixes of DDP removed); of a checkpoint of this template, its backbone's."""
    from timm.models import load_state_dict

    path = path.expanduser()
    if not path.is_file():
        raise UserError(f"model.weights file not found: {path}. {OFFLINE_HINT}")
    try:
        loaded = load_state_dict(str(path), use_ema=False)
    except Exception as err:
        raise UserError(f"model.weights file {path} is not a readable state dict ({err}).") from err
    if not isinstance(loaded, dict):
        raise UserError(f"model.weights file {path} holds a {type(loaded).__name__}, not weights.")
    loaded = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    backbone = {
        k.removeprefix("backbone."): v for k, v in loaded.items() if k.startswith("backbone.")
    }
    return backbone or loaded
