"""How training shows its progress: a rich progress bar on a terminal, one plain line per epoch
anywhere else.

A redrawn bar is what a person at a terminal wants; in a CI log, a SLURM output file or behind
`| tee`, every redraw becomes text of its own. There, each epoch ends with one log line of its
metrics instead (which also lands in train.log).
"""

import logging
import sys
import time

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger(__name__)


def progress_bar(enabled: bool = True, interactive: bool | None = None) -> ProgressBar | None:
    """The progress callback: `EpochMetricsBar` when `interactive` (None: when standard output
    is a terminal), else `EpochLines`; None when `trainer.enable_progress_bar` is false."""
    if not enabled:
        return None
    interactive = sys.stdout.isatty() if interactive is None else interactive
    return EpochMetricsBar() if interactive else EpochLines()


def epoch_metrics(trainer, skip_prefix: str | None = None) -> dict[str, float]:
    """The latest logged metrics (losses, accuracies, learning rates), by name; not the
    per-class accuracies (one per class: metrics.csv has them, a line would not hold 30)."""
    return {
        name: float(value)
        for name, value in sorted(trainer.callback_metrics.items())
        if value.numel() == 1
        and not (skip_prefix and name.startswith(skip_prefix))
        and "/class_acc/" not in name
    }


class EpochMetricsBar(RichProgressBar):
    """Lightning's rich progress bar, showing the last epoch's losses and accuracies under it.
    (The model logs them without `prog_bar=True`, so the stock bar shows none.)"""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {**items, **epoch_metrics(trainer)}


class EpochLines(ProgressBar):
    """One log line per finished training epoch: its metrics, learning rate and duration.

    Lightning updates the epoch's metrics only after every callback's `on_train_epoch_end`
    has run, so an epoch's line is written when the next epoch starts, or training ends.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._finished: tuple[int, float, list[float]] | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._write_finished_epoch(trainer)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # The learning rates this epoch trained with; the scheduler steps after this hook.
        lrs = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]
        self._finished = (trainer.current_epoch, time.perf_counter() - self._started, lrs)

    def on_train_end(self, trainer, pl_module) -> None:
        self._write_finished_epoch(trainer)

    def _write_finished_epoch(self, trainer) -> None:
        if self._finished is None or not self._enabled or not trainer.is_global_zero:
            return
        epoch, seconds, lrs = self._finished
        self._finished = None
        # The learning-rate monitor has already logged the next epoch's rate: use this one's.
        metrics = epoch_metrics(trainer, skip_prefix="lr-")
        metrics = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        lr = " ".join(f"lr {v:.4g}" for v in lrs)
        log.info("Epoch %d/%d: %s %s (%.1f s)", epoch, trainer.max_epochs - 1, metrics, lr, seconds)
