"""Write checkpoints so that a kill never corrupts them, and keep `last.ckpt` truly last."""

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from src.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file beside the target, fsync it, then rename it into place.

    Lightning's own "atomic" save goes through an fsspec transaction whose temporary file
    lives in the system temp folder; when that is another filesystem (tmpfs, a node-local
    disk) the final move is a copy, and a kill during it leaves a truncated `last.ckpt`.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        with atomic_write(Path(path), "wb", durable=True) as f:
            torch.save(checkpoint, f)


class EveryEpochLastCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose `last.ckpt` really is the last epoch, and whose best
    checkpoint is named after the monitored metric unless `filename` is given.

    Since Lightning 2.6, `save_last=True` only rewrites `last.ckpt` in an epoch where a top-k
    checkpoint is saved, so with `save_top_k=1` it is a copy of the best epoch and resuming
    repeats every epoch after it.
    """

    def __init__(self, *args, filename: str | None = None, monitor: str | None = None, **kwargs):
        if filename is None and monitor is not None:
            # `best-epoch{epoch:03d}-acc{val/acc:.4f}` for `val/acc`: the metric's name without
            # its `val/` and with `_` for `/` (a `/` would make a sub-folder), then its value.
            tag = monitor.removeprefix("val/").replace("/", "_").replace(" ", "_")
            filename = f"best-epoch{{epoch:03d}}-{tag}{{{monitor}:.4f}}"
        super().__init__(*args, filename=filename, monitor=monitor, **kwargs)

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
