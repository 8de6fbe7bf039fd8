"""A callback that holds a run at the first batch of its second epoch, for the SLURM tests.

Those tests signal a running job (`scancel --signal=TERM`, the time-limit warning) and check
that it stops mid-run and continues later. On tiny images an epoch takes a fraction of a
second, less than it takes to see the first `last.ckpt` and call `scancel`: the job could
finish before the signal arrives (CI saw it). Held here, the job waits for the signal,
however fast its epochs are; the `release` file lets the resumed run pass.

Added through the config: `hold_overrides(path)`.
"""

import time
from pathlib import Path

from lightning.pytorch import Callback


class HoldSecondEpoch(Callback):
    def __init__(self, release: str) -> None:
        self.release = Path(release)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) != (1, 0):
            return
        # Lightning's SIGTERM handler sets received_sigterm; the run then stops after this batch.
        while not (trainer.received_sigterm or self.release.exists()):
            time.sleep(0.05)


def hold_overrides(release: Path) -> list[str]:
    """The `src.train` overrides that add the callback; creating `release` lets runs pass."""
    return [
        f"+callbacks.hold._target_={__name__}.HoldSecondEpoch",
        f"+callbacks.hold.release={release}",
    ]
