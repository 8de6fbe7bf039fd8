"""Train a transfer-learning model: `python -m src.train [group=option] [key=value ...]`.

This is the only place that reads the whole config: it builds the datamodule, model,
callbacks, loggers and Trainer from their `_target_` entries, fits, re-validates the best
checkpoint and writes `summary.json` into the run directory.
"""

import json
import logging
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# torch and lightning are imported inside `train`, so that `--help` and config errors
# answer without seconds of imports.

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the best validation accuracy (the value sweeps optimise)."""
    from src.ddp_relaunch import this_job_on_the_command_line
    from src.errors import exit_on_user_error

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    # In a sweep, DDP's extra processes must re-run this job, not the whole sweep.
    job_scope = this_job_on_the_command_line() if multirun else nullcontext()
    # In a sweep, errors propagate: the launcher marks this job failed and carries on.
    with exit_on_user_error(log, enabled=not multirun), job_scope:
        summary = train(cfg)
    if summary["interrupted"]:
        # 128 + signal number, as a shell reports a process stopped by that signal.
        raise SystemExit(143 if summary["interrupted_by"] == "SIGTERM" else 130)
    return summary["best_val_acc"]


def train(cfg: DictConfig) -> dict:
    """Fit the model described by `cfg`, then validate the best checkpoint; return the summary."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.trainer.states import TrainerStatus
    from lightning.pytorch.utilities import rank_zero_only

    # `lightning` adds a console handler of its own on import; Hydra's root handler already
    # prints (and writes train.log), so without this every Lightning message shows twice.
    logging.getLogger("lightning").handlers.clear()
    # A frozen backbone is in eval mode on purpose (see TransferLearningModel.train).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Raised inside Lightning by a torch pytree change; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")

    from src.checkpoints import load_checkpoint
    from src.config_checks import check_config
    from src.precision import resolve_precision
    from src.resume import keep_earlier_metrics, resolve_ckpt_path

    check_config(cfg)
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, Path(cfg.paths.log_dir))
    # Under DDP every process runs this function; the rank is known from the environment
    # before the Trainer exists.
    if rank_zero_only.rank == 0:
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    class_names = datamodule.class_names
    model = instantiate(cfg.model, num_classes=len(class_names), class_names=class_names)
    checkpoint = None if ckpt_path is None else load_checkpoint(ckpt_path, len(class_names))

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    if checkpoint:
        keep_earlier_metrics(loggers, checkpoint)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, precision=precision)

    fit_started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) and SIGTERM into SIGTERMException, after
        # the current batch; last.ckpt still holds the last finished epoch.
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
    fit_time_s = time.perf_counter() - fit_started
    interrupted = trainer.state.status == TrainerStatus.INTERRUPTED

    summary = {
        "strategy": cfg.strategy.name,
        "num_classes": len(class_names),
        "class_names": class_names,
        "train_size": len(datamodule.train_set),
        "val_size": len(datamodule.val_set),
        "epochs_trained": trainer.current_epoch,
        "precision": str(trainer.precision),
        "accelerator": type(trainer.accelerator).__name__,
        "seed": cfg.seed,
        "interrupted": interrupted,
        "interrupted_by": interrupted_by(trainer) if interrupted else None,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "skipped_images": datamodule.skipped_images,
        "fit_time_s": round(fit_time_s, 2),
        **best_checkpoint_results(trainer, model, datamodule, revalidate=not interrupted),
    }
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    if trainer.is_global_zero:
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if cfg.get("figures"):
            from src.run_figures import write_run_figures

            log.info("Figures: %s", ", ".join(p.name for p in write_run_figures(output_dir)))
        log.info(result_line(summary, output_dir))
        if interrupted:
            log.warning(
                "Interrupted by %s after %d finished epoch(s); continue with: "
                "python -m src.train resume=%s",
                summary["interrupted_by"], summary["epochs_trained"], output_dir,
            )  # fmt: skip
    return summary


def interrupted_by(trainer) -> str:
    return "SIGTERM" if trainer.received_sigterm else "SIGINT"


def best_checkpoint_results(trainer, model, datamodule, revalidate: bool = True) -> dict:
    """Re-load the best checkpoint, validate it, and say which epoch it came from.

    An interrupted run skips the validation: it should exit quickly, and a second Ctrl-C
    would find Lightning's handler gone.
    """
    import torch

    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or checkpoint.best_model_score is None:
        # No best-val/acc checkpoint (callbacks=none, fast_dev_run): report the metric only.
        acc = trainer.callback_metrics.get("val/acc_best")
        return {
            "best_val_acc": None if acc is None else float(acc),
            "best_epoch": None,
            "best_ckpt": None,
            "last_ckpt": None,
        }
    # Read these first: validating restores the callback's state as it was at the best epoch.
    best_ckpt, best_val_acc = checkpoint.best_model_path, float(checkpoint.best_model_score)
    last_ckpt = checkpoint.last_model_path or None
    saved = torch.load(best_ckpt, map_location="cpu", weights_only=True)
    results = {
        "best_val_acc": best_val_acc,
        # 0-based, like the `epoch` column of metrics.csv
        "best_epoch": saved["epoch"],
        "best_ckpt": best_ckpt,
        "last_ckpt": last_ckpt,
    }
    if not revalidate:
        return results
    # Keep this extra validation out of metrics.csv, which holds one row set per epoch.
    loggers, trainer.loggers = trainer.loggers, []
    (metrics,) = trainer.validate(model, datamodule=datamodule, ckpt_path=best_ckpt, verbose=False)
    trainer.loggers = loggers
    results["best_ckpt_val_acc"] = metrics["val/acc"]
    results["best_ckpt_val_loss"] = metrics["val/loss"]
    return results


def result_line(summary: dict, output_dir: Path) -> str:
    acc, epoch = summary["best_val_acc"], summary["best_epoch"]
    acc_text = "n/a" if acc is None else f"{acc:.4f}"
    where = "" if epoch is None else f" at epoch {epoch}"
    return (
        f"Result: {summary['strategy']} best val/acc {acc_text}{where} "
        f"({summary['epochs_trained']} epochs, {summary['fit_time_s']:.1f} s); "
        f"run directory {output_dir}"
    )


if __name__ == "__main__":
    from src.resume import main_with_resume

    main_with_resume(main)
