"""A callback that holds a run at the first batch of an epoch, for the tests that signal runs.

Those tests signal or kill a run once `last.ckpt` holds an epoch, and check that it stopped
mid-run and continues later. On tiny images an epoch takes a fraction of a second, less than
it takes to see the checkpoint and send the signal: the run could finish first (CI saw it
on SLURM). Held here, the run waits for the signal (or the kill), however fast its epochs
are; the `release` file, created by the test afterwards, lets the resumed run pass.

Added through the config: `hold_overrides(release, epoch)`.
"""

import time
from pathlib import Path

from lightning.pytorch import Callback


class HoldAtEpoch(Callback):
    def __init__(self, epoch: int, release: str) -> None:
        self.epoch = epoch
        self.release = Path(release)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) != (self.epoch, 0):
            return
        # SIGTERM sets received_sigterm (the run stops after this batch); Ctrl-C raises
        # KeyboardInterrupt in the sleep.
        while not (trainer.received_sigterm or self.release.exists()):
            time.sleep(0.05)


def hold_overrides(release: Path, epoch: int = 1) -> list[str]:
    """The `src.train` overrides that hold the run at `epoch` until `release` exists."""
    return [
        f"+callbacks.hold._target_={__name__}.HoldAtEpoch",
        f"+callbacks.hold.epoch={epoch}",
        f"+callbacks.hold.release={release}",
    ]
