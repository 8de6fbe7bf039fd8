"""Fit a model with Lightning, then re-validate its best checkpoint and test it.

Interrupting (Ctrl-C, SIGTERM) is a normal way for a fit to end: `last.ckpt` holds the last
finished epoch and the run reports itself as interrupted instead of crashing.
"""

import time

import torch
from lightning.pytorch.trainer.states import TrainerStatus


def fit(trainer, model, datamodule, ckpt_path=None) -> tuple[float, str | None]:
    """`trainer.fit`; returns its duration in seconds and what interrupted it ("SIGTERM",
    "SIGINT" or None): an interruption is not an error."""
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) and SIGTERM into SIGTERMException, after
        # the current batch; last.ckpt still holds the last finished epoch.
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
    seconds = time.perf_counter() - started
    if trainer.state.status != TrainerStatus.INTERRUPTED:
        return seconds, None
    return seconds, "SIGTERM" if trainer.received_sigterm else "SIGINT"


def best_checkpoint_results(
    trainer, model, datamodule, revalidate: bool = True, monitor: str = "val/acc"
) -> dict:
    """Re-load the best checkpoint (by `monitor`), validate it, and say which epoch it came from.

    Returns the `RunSummary` fields best_val_acc (the best val/acc of the run), monitor_best,
    best_epoch, best_ckpt, last_ckpt and, when revalidated, best_ckpt_val_acc,
    best_ckpt_val_loss and best_ckpt_val_metrics. An interrupted run skips the validation:
    it should exit quickly, and a second Ctrl-C would find Lightning's handler gone.
    """
    logged = trainer.callback_metrics
    best = {key: float(logged[key]) for key in ("val/acc_best", f"{monitor}_best") if key in logged}
    results = {
        "best_val_acc": best.get("val/acc_best"),
        "monitor_best": best.get(f"{monitor}_best"),
    }
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or checkpoint.best_model_score is None:
        # No best checkpoint (callbacks=none, fast_dev_run): report the metrics only.
        return results
    # Read these first: validating restores the callback's state as it was at the best epoch.
    best_ckpt = checkpoint.best_model_path
    results["monitor_best"] = float(checkpoint.best_model_score)
    if monitor == "val/acc":  # also known when a resumed run had no epoch left to log it
        results["best_val_acc"] = results["monitor_best"]
    last_ckpt = checkpoint.last_model_path or None
    # Only the epoch is read: mmap leaves the weights on disk (validate loads them below).
    saved = torch.load(best_ckpt, map_location="cpu", weights_only=True, mmap=True)
    results.update(best_epoch=saved["epoch"], best_ckpt=best_ckpt, last_ckpt=last_ckpt)
    if not revalidate:
        return results
    # Keep this extra validation out of metrics.csv, which holds one row set per epoch.
    loggers, trainer.loggers = trainer.loggers, []
    (metrics,) = trainer.validate(model, datamodule=datamodule, ckpt_path=best_ckpt, verbose=False)
    trainer.loggers = loggers
    results["best_ckpt_val_acc"] = metrics["val/acc"]
    results["best_ckpt_val_loss"] = metrics["val/loss"]
    results["best_ckpt_val_metrics"] = {k: v for k, v in metrics.items() if not k.endswith("_best")}
    return results


def test_best_checkpoint(trainer, model, datamodule, best_ckpt: str | None) -> dict:
    """The test split's metrics of the best checkpoint (the current weights when the run
    kept no checkpoint), as the `RunSummary` fields test_acc, test_loss and test_metrics.

    This runs once, after training: the checkpoint was chosen on val, so val/acc_best is
    an optimistic estimate and test/acc is the number to report.
    """
    loggers, trainer.loggers = trainer.loggers, []  # metrics.csv holds epochs only
    (metrics,) = trainer.test(model, datamodule=datamodule, ckpt_path=best_ckpt, verbose=False)
    trainer.loggers = loggers
    return {
        "test_acc": metrics["test/acc"],
        "test_loss": metrics["test/loss"],
        "test_metrics": metrics,  # also test/f1_macro, test/class_acc/<class>, ...
    }
