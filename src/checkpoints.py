"""Write checkpoints so that a kill never corrupts them, and check the ones users hand us.

Lightning's own "atomic" save goes through an fsspec transaction whose temporary file lives in
the system temp folder; when that is another filesystem (tmpfs, a node-local disk) the final
move is a copy, and a kill during it leaves a truncated `last.ckpt`.
"""

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from src.errors import UserError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file beside the target, fsync it, then `os.replace` it into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        # Make the rename itself durable (a power cut could otherwise undo it).
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class EveryEpochLastCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose `last.ckpt` really is the last epoch.

    Since Lightning 2.6, `save_last=True` only rewrites `last.ckpt` in an epoch where a top-k
    checkpoint is saved, so with `save_top_k=1` it is a copy of the best epoch and resuming
    repeats every epoch after it.
    """

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer) -> None:
        # Skips fast_dev_run, sanity checks, validate(), and a step already saved.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def load_checkpoint(path: str | Path, num_classes: int | None = None) -> dict[str, Any]:
    """Read a checkpoint of `TransferLearningModel` without running pickled code.

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
