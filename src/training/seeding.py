"""Seed every training epoch from (seed, epoch), so a resumed run repeats the same epochs.

With one seed at the start, the data order and augmentation of epoch k depend on every random
draw before it, which a run resumed from a checkpoint does not replay. Re-seeding at each
epoch start makes them a function of the epoch number alone.
"""

from lightning.pytorch import Callback, seed_everything


class SeedEachEpoch(Callback):
    """Call `seed_everything(seed + epoch)` before each training epoch draws its batches.

    Lightning creates the loader iterator of a fit's first epoch (and fetches its first
    batch) before `on_train_epoch_start`, so that epoch is seeded in `on_fit_start`, using
    the epoch a resumed checkpoint continues at.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.first_epoch = 0

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.first_epoch = next_epoch(checkpoint)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._seed(self.first_epoch)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.first_epoch:
            self._seed(trainer.current_epoch)

    def _seed(self, epoch: int) -> None:
        seed_everything(self.seed + epoch, workers=True, verbose=False)


def next_epoch(checkpoint: dict) -> int:
    """The epoch a fit resumed from `checkpoint` starts at."""
    # Epochs the checkpoint has processed = the index of the epoch that runs next.
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    processed = progress.get("current", {}).get("processed")
    return checkpoint["epoch"] + 1 if processed is None else processed
