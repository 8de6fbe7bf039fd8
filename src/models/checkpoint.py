"""Read a checkpoint of `TransferLearningModel` that a user hands us, and rebuild its model.

Checkpoints are read with `weights_only=True`: loading one never runs code stored in it.
"""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from src.errors import UserError


def load_checkpoint(path: str | Path, num_classes: int | None = None) -> dict[str, Any]:
    """Read a checkpoint of `TransferLearningModel`.

    Raises a `UserError` that says what is wrong when the file is missing, truncated, not a
    Lightning checkpoint, from another model, or has a head of another size than
    `num_classes`. Used for training's `ckpt_path` and by evaluation and prediction.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        hint = f" (it is a folder; checkpoints are in {path}/checkpoints/)" if path.is_dir() else ""
        raise UserError(f"Checkpoint not found: {path}{hint}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as err:
        raise UserError(
            f"Checkpoint {path} cannot be read: it is truncated, corrupt or not a PyTorch file "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})."
        ) from err
    state_dict = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise UserError(
            f"Checkpoint {path} is not a Lightning checkpoint (no 'state_dict'); for plain "
            "ResNet18 weights use model.weights=PATH instead."
        )
    expected = {"fc.weight", "fc.bias", "backbone.conv1.weight", "backbone.layer4.1.bn2.weight"}
    if not expected <= state_dict.keys():
        raise UserError(
            f"Checkpoint {path} is from another model: it lacks "
            f"{sorted(expected - state_dict.keys())} of this template's ResNet18 "
            f"(it has e.g. {sorted(state_dict)[:3]})."
        )
    saved_classes = state_dict["fc.weight"].shape[0]
    if num_classes is not None and saved_classes != num_classes:
        names = (checkpoint.get("hyper_parameters") or {}).get("class_names")
        raise UserError(
            f"Checkpoint {path} predicts {saved_classes} classes {names or ''}, but the data "
            f"has {num_classes}. Use a checkpoint trained on the same classes."
        )
    return checkpoint


def load_model(ckpt_path: str | Path, device: str = "cpu"):
    """The model of a checkpoint, in eval mode, without fetching its ImageNet weights.

    The file is read once, through `load_checkpoint`'s checks (missing, truncated, another
    model); the model is rebuilt from the hyper-parameters saved beside its weights.
    """
    from src.models.transfer import TransferLearningModel

    checkpoint = load_checkpoint(ckpt_path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if not hparams.get("class_names"):
        raise UserError(f"Checkpoint {ckpt_path} holds no class_names; it cannot name its labels.")
    model = TransferLearningModel(**{**hparams, "weights": None})
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()
