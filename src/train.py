"""Train a transfer-learning model: `python -m src.train [group=option] [key=value ...]`.

This is the only place that reads the whole config: it builds the datamodule, model,
callbacks, loggers and Trainer from their `_target_` entries, fits, re-validates the best
checkpoint, tests it when the data has a test split, and writes `summary.json` and
`splits.csv` (the split it trained on) into the run directory.
"""

import logging
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import src.runs.slurm  # noqa: F401  (registers the ${if_gpu:...} resolver of hydra/launcher=slurm)

# torch and lightning are imported inside `train`, so that `--help` and config errors
# answer without seconds of imports.

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the value of `optimized_metric` (what sweeps optimise)."""
    from src.errors import exit_on_user_error
    from src.runs.run_dir import multirun_dir
    from src.runs.slurm import JobInterrupted
    from src.runs.slurm_job import slurm_job
    from src.runs.sweep_resume import start_sweep_job
    from src.training.ddp_relaunch import this_job_on_the_command_line

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    output_dir = Path(hydra_cfg.runtime.output_dir)
    # In a sweep, errors propagate: the launcher marks this job failed and carries on.
    with exit_on_user_error(log, enabled=not multirun):
        # A job re-run in its sweep directory skips or continues its earlier attempt.
        done, extra = start_sweep_job(cfg, output_dir) if multirun else (None, [])
        if done is not None:
            return done.optimized_value
        # In a sweep, DDP's extra processes must re-run this job, not the whole sweep.
        job_scope = this_job_on_the_command_line(extra) if multirun else nullcontext()
        max_requeues = OmegaConf.select(hydra_cfg, "launcher.max_num_timeout", default=0)
        with job_scope, slurm_job(output_dir, max_requeues or 0) as slurm:
            summary = train(cfg)
    if summary.interrupted:
        resume = f"-m resume={multirun_dir(hydra_cfg)}" if multirun else f"resume={output_dir}"
        message = (
            f"Interrupted by {summary.interrupted_by} after {summary.epochs_trained} finished "
            f"epoch(s); continue with: python -m src.train {resume}"
        )
        requeued = slurm is not None and slurm.runs_again()
        if requeued:
            message = f"{message.split(';')[0]}; SLURM starts the job again and it continues."
        log.warning("%s", message)
        if slurm is not None and not requeued:
            raise JobInterrupted(message)  # the sweep reports this job as stopped
        # 128 + signal number, as a shell reports a process stopped by that signal. Under
        # SLURM: no result, so the sweep waits for the job's next run.
        raise SystemExit(143 if summary.interrupted_by == "SIGTERM" else 130)
    return summary.optimized_value


def train(cfg: DictConfig):
    """Fit the model described by `cfg`, then validate the best checkpoint; return the
    `RunSummary` (also written to `<run dir>/summary.json`)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.utilities import rank_zero_only

    # `lightning` adds a console handler of its own on import; Hydra's root handler already
    # prints (and writes train.log), so without this every Lightning message shows twice.
    logging.getLogger("lightning").handlers.clear()
    # A frozen backbone is in eval mode on purpose (see TransferLearningModel.train).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Raised inside Lightning by a torch pytree change; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")

    from src.data.splits import FILE_NAME as SPLITS_FILE
    from src.errors import UserError
    from src.inspection.predictions import KeepValidationOutputs
    from src.models.checkpoint import load_checkpoint, require_same_shapes
    from src.runs.resume import keep_earlier_metrics, resolve_ckpt_path
    from src.runs.slurm_job import lightning_slurm_plugins
    from src.runs.summary import RunSummary
    from src.training.config_checks import check_config
    from src.training.feature_cache import CacheFeatures
    from src.training.fit import best_checkpoint_results, fit, interruption, test_best_checkpoint
    from src.training.precision import resolve_precision
    from src.training.trackers import log_config, log_run_end

    check_config(cfg)
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, Path(cfg.paths.log_dir))
    # Under DDP every process runs this function; the rank is known from the environment
    # before the Trainer exists.
    if rank_zero_only.rank == 0:
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    # Resuming in place keeps the split the run started with, even if files were added.
    splits_file = output_dir / SPLITS_FILE
    reuse = {"splits_file": str(splits_file)} if ckpt_path and splits_file.is_file() else {}
    datamodule, model = data_and_model(cfg, **reuse)
    if rank_zero_only.rank == 0 and getattr(datamodule, "splits", None) is not None:
        datamodule.splits.write(splits_file)
    class_names = datamodule.class_names
    checkpoint = None
    if ckpt_path is not None:
        checkpoint = load_checkpoint(ckpt_path, len(class_names), cfg.model.get("backbone"))
        require_same_shapes(model, checkpoint, ckpt_path)

    # The strategy's callbacks (lp_ft, gradual) come first: a stage opened at the start of
    # an epoch is then in the learning rates logged for that epoch.
    callbacks = strategy_callbacks(cfg)
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks = [c for c in callbacks if c is not None]  # progress_bar: none when disabled
    if cfg.data.get("cache_features"):
        callbacks.append(CacheFeatures())
    elif cfg.model.get("freeze_backbone"):
        # A frozen backbone maps each validation image to the same features in every epoch.
        callbacks.append(CacheFeatures(train=False))
    # The figures reuse the outputs of the best checkpoint's final validation.
    validation_outputs = KeepValidationOutputs()
    if cfg.get("figures"):
        callbacks.append(validation_outputs)
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    if not loggers:  # logger=none: nothing to send learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if checkpoint:
        keep_earlier_metrics(loggers, checkpoint)
    log_config(loggers, cfg)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    plugins = [*instantiate(cfg.trainer.get("plugins") or []), *lightning_slurm_plugins()]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, precision=precision, plugins=plugins
    )
    if not any(getattr(c, "save_last", False) for c in trainer.checkpoint_callbacks):
        log.warning(
            "No callback writes checkpoints/last.ckpt (callbacks=none?): if this run is "
            "interrupted, resume=DIR cannot continue it."
        )

    fit_time_s = fit(trainer, model, datamodule, ckpt_path)
    interrupted_by = interruption(trainer)
    optimized = trainer.callback_metrics.get(cfg.optimized_metric)
    best = best_checkpoint_results(
        trainer, model, datamodule, revalidate=not interrupted_by, monitor=cfg.monitor
    )
    test_set = getattr(datamodule, "test_set", None)
    if test_set is not None and not interrupted_by:
        best.update(test_best_checkpoint(trainer, model, datamodule, best.get("best_ckpt")))
    summary = RunSummary(
        strategy=cfg.strategy.name,
        num_classes=len(class_names),
        class_names=class_names,
        train_size=len(datamodule.train_set),
        val_size=len(datamodule.val_set),
        test_size=None if test_set is None else len(test_set),
        epochs_trained=trainer.current_epoch,
        precision=str(trainer.precision),
        accelerator=type(trainer.accelerator).__name__,
        seed=cfg.seed,
        preprocessing=datamodule.preprocessing.as_dict(),
        interrupted=interrupted_by is not None,
        interrupted_by=interrupted_by,
        resumed_from=str(ckpt_path) if ckpt_path else None,
        skipped_images=datamodule.skipped_images,
        fit_time_s=round(fit_time_s, 2),
        optimized_metric=cfg.optimized_metric,
        optimized_value=None if optimized is None else float(optimized),
        monitor=cfg.monitor,
        monitor_mode=cfg.monitor_mode,
        **best,
    )
    summary.wall_time_s = round(time.perf_counter() - started, 2)
    if trainer.is_global_zero:
        summary.write(output_dir)
        if cfg.get("figures"):
            from src.inspection.run_figures import write_run_figures

            drawing = time.perf_counter()
            validation = validation_outputs.predictions(datamodule.val_set, class_names)
            paths = write_run_figures(
                output_dir, validation=validation, train_set=datamodule.train_set
            )
            names = ", ".join(p.name for p in paths)
            log.info("Figures (%.1f s): %s", time.perf_counter() - drawing, names)
        log_run_end(trainer.loggers, output_dir, summary, cfg, trainer.global_step)
        log.info(summary.result_line(output_dir))
    if optimized is None and not interrupted_by:
        raise UserError(
            f"optimized_metric={cfg.optimized_metric} was never logged, so a sweep has "
            f"nothing to optimise (summary.json is written). Choose one of the logged "
            f"metrics: {', '.join(sorted(trainer.callback_metrics))}."
        )
    return summary


def data_and_model(cfg: DictConfig, **data_kwargs):
    """The datamodule of `cfg` (with `data_kwargs` on top), set up for fitting, and the
    model sized for its classes, with the loss weights of `model.class_weights` from the
    training counts and the `monitor` (also what `src.lr_find` tests)."""
    from hydra.utils import instantiate

    from src.data.balance import loss_weights
    from src.models.backbone import weights_preprocessing

    # Images are prepared as the backbone's weights expect (data.* keys override).
    weights = weights_preprocessing(cfg.model.backbone, cfg.model.weights)
    datamodule = instantiate(cfg.data, preprocessing=weights, **data_kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    names = datamodule.class_names
    targets = datamodule.train_set.targets
    class_weights = loss_weights(cfg.model.get("class_weights"), targets, names)
    if class_weights:
        weights = zip(names, class_weights, strict=True)
        log.info("Loss weights per class: %s", ", ".join(f"{n} {w:.4g}" for n, w in weights))
    model = instantiate(
        cfg.model,
        num_classes=len(names),
        class_names=names,
        class_weights=class_weights,
        monitor=cfg.monitor,
        monitor_mode=cfg.monitor_mode,
        preprocessing=datamodule.preprocessing.as_dict(),
    )
    return datamodule, model


def strategy_callbacks(cfg: DictConfig) -> list:
    """The callbacks a strategy brings (`lp_ft`, `gradual`: what they freeze and open)."""
    from hydra.utils import instantiate

    return [instantiate(c) for c in (cfg.strategy.get("callbacks") or {}).values()]


if __name__ == "__main__":
    import gc

    from src.runs.resume import main_with_resume

    main_with_resume(main)
    # Python's last garbage collection at exit walks every object that torch, torchvision and
    # Lightning created: about 1 s on the CI machine, a twentieth of a 2-epoch run (README,
    # "Short runs"). Everything that needed closing (checkpoints, loggers, figures) is
    # closed by now, so that walk is skipped.
    gc.freeze()
