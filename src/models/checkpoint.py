"""Read a checkpoint of `TransferLearningModel` that a user hands us, and rebuild its model.

Checkpoints are read with `weights_only=True`: loading one never runs code stored in it.
"""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from src.errors import UserError


def load_checkpoint(
    path: str | Path, num_classes: int | None = None, backbone: str | None = None
) -> dict[str, Any]:
    """Read a checkpoint of `TransferLearningModel`.

    Raises a `UserError` that says what is wrong when the file is missing, truncated, not a
    Lightning checkpoint, from another model, of another backbone than `backbone`, or has a
    head of another size than `num_classes`. Used for training's `ckpt_path` and by
    evaluation and prediction.
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
            "backbone weights use model.weights=PATH instead."
        )
    from src.models.transfer import upgrade_state_dict

    upgrade_state_dict(state_dict)
    hparams = checkpoint.get("hyper_parameters") or {}
    if not (hparams.get("num_classes") and any(k.startswith("backbone.") for k in state_dict)):
        raise UserError(
            f"Checkpoint {path} is from another model: it lacks this template's backbone and "
            f"hyper-parameters (it has e.g. {sorted(state_dict)[:3]})."
        )
    saved_backbone = saved_backbone_name(checkpoint)
    if backbone is not None and str(backbone) != saved_backbone:
        raise UserError(
            f"Checkpoint {path} holds a {saved_backbone}, but this run builds model.backbone="
            f"{backbone}. Pass model.backbone={saved_backbone} (and the same "
            "model.backbone_kwargs) to continue from it."
        )
    if num_classes is not None and hparams["num_classes"] != num_classes:
        raise UserError(
            f"Checkpoint {path} predicts {hparams['num_classes']} classes "
            f"{hparams.get('class_names') or ''}, but the data has {num_classes}. Use a "
            "checkpoint trained on the same classes."
        )
    return checkpoint


def saved_backbone_name(checkpoint: dict) -> str:
    """The backbone a checkpoint was trained with; checkpoints from before the choice of
    backbone existed hold a ResNet18."""
    return str((checkpoint.get("hyper_parameters") or {}).get("backbone", "resnet18"))


def require_same_shapes(model: torch.nn.Module, checkpoint: dict, path: str | Path) -> None:
    """Stop with what differs when the checkpoint's weights do not fit `model` (e.g. a ViT
    built for another image size)."""
    from src.models.weights_file import state_dict_mismatch

    mismatch = state_dict_mismatch(model.state_dict(), checkpoint["state_dict"])
    if mismatch:
        raise UserError(
            f"Checkpoint {path} does not fit the {saved_backbone_name(checkpoint)} built "
            f"here: {mismatch}. Was it trained with other model.backbone_kwargs?"
        )


def load_model(ckpt_path: str | Path, device: str = "cpu"):
    """The model of a checkpoint, in eval mode, without fetching any pretrained weights.

    The file is read once, through `load_checkpoint`'s checks (missing, truncated, another
    model); the model (its backbone included) is rebuilt from the hyper-parameters saved
    beside its weights.
    """
    from src.models.transfer import TransferLearningModel

    checkpoint = load_checkpoint(ckpt_path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if not hparams.get("class_names"):
        raise UserError(f"Checkpoint {ckpt_path} holds no class_names; it cannot name its labels.")
    model = TransferLearningModel(**{**hparams, "weights": None})
    require_same_shapes(model, checkpoint, ckpt_path)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()
