"""Build a torchvision ResNet18 from a weights name, a local file, or nothing (random init)."""

from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from src.errors import UserError

OFFLINE_HINT = (
    "To run without internet access, either use random initialisation (model.weights=null) "
    "or download the file once on a machine with internet access (torchvision caches it in "
    "~/.cache/torch/hub/checkpoints/) and pass it as model.weights=/path/to/resnet18.pth."
)


def build_resnet18(weights: str | None) -> nn.Module:
    """Return a ResNet18 with ImageNet's 1000-class `fc`.

    `weights` is a torchvision weights name (`IMAGENET1K_V1`, `DEFAULT`), a path to a
    state-dict file (`.pth`/`.pt`, e.g. torchvision's download or a previous run's export),
    or `None` for random initialisation.
    """
    net = resnet18(weights=None)
    if weights is None:
        return net
    if looks_like_path(weights):
        net.load_state_dict(_load_local_state_dict(Path(weights)), strict=False)
        return net
    try:
        tv_weights = ResNet18_Weights[weights]
    except KeyError:
        names = ", ".join(ResNet18_Weights.__members__)
        raise UserError(
            f"Unknown model.weights '{weights}'. Use one of {names}, a path to a .pth "
            "state-dict file, or null for random initialisation."
        ) from None
    try:
        state_dict = tv_weights.get_state_dict(progress=False, check_hash=True)
    except (URLError, OSError, RuntimeError) as err:
        raise UserError(
            f"Could not download the ImageNet weights {weights} from {tv_weights.url} "
            f"({err}).\n{OFFLINE_HINT}"
        ) from err
    net.load_state_dict(state_dict)
    return net


def looks_like_path(weights: str) -> bool:
    return "/" in weights or "\\" in weights or weights.endswith((".pth", ".pt", ".ckpt"))


def _load_local_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ResNet18 state dict; a differently sized `fc` (another task's head) is dropped."""
    path = path.expanduser()
    if not path.is_file():
        raise UserError(f"model.weights file not found: {path}. {OFFLINE_HINT}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"model.weights file {path} is not a readable state dict ({err}).") from err
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    expected = {k for k in resnet18(weights=None).state_dict() if not k.startswith("fc.")}
    missing, unexpected = expected - state_dict.keys(), state_dict.keys() - expected
    if missing or unexpected:
        raise UserError(
            f"model.weights file {path} does not hold ResNet18 weights: "
            f"{len(missing)} missing keys (e.g. {sorted(missing)[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {sorted(unexpected)[:3]})."
        )
    return state_dict
